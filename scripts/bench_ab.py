#!/usr/bin/env python3
"""bench_ab.py - A/B timings of bench_cuda under settings (environment variables, builds) in one process tree.

    bench_ab.py BENCH 'ARGS' NAME[@BENCH2]:[VAR=VALUE,...] ... [--rounds R]

Runs `BENCH ARGS --csv FILE` once per setting and round (a setting may name its own binary after '@', to time two
builds), and prints for each of our matmul rows (the "vs-cublas" rows, one per dtype, absmax kind, shape and m) the
median time in us under each setting and its change against the first. Example, on the GPU machine:

    scripts/bench_ab.py build/bench/bench_cuda '--no-f32 --shape 28672x8192 --m 1,16' \\
        default: narrow:BNB4_CUDA_PIPE_NARROW=1 again: --rounds 4

Why this way (docs/performance.md v55, v61): timings move by up to 6 % between processes, and the first process on
a freshly started GPU machine ran 2-4 % slow; so one warm-up process runs first (discarded), every setting runs in
every round, the order of the settings rotates from round to round (none always first), and a row's value is the
median over the rounds. A setting repeated under another name ("again:" above) shows the spread that is left.
"""
import collections
import csv
import os
import statistics
import subprocess
import sys
import tempfile


def parse(argv):
    rounds = 3
    if '--rounds' in argv:
        i = argv.index('--rounds')
        rounds = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    if len(argv) < 3:
        sys.exit(__doc__)
    bench, args, settings = argv[0], argv[1].split(), []
    for spec in argv[2:]:
        head, _, envs = spec.partition(':')
        name, _, binary = head.partition('@')
        env = dict(e.split('=', 1) for e in envs.split(',') if e)
        settings.append((name, binary or bench, env))
    if len({name for name, _, _ in settings}) != len(settings):
        sys.exit('bench_ab.py: setting names must differ')
    return bench, args, settings, rounds


def main(argv):
    bench, args, settings, rounds = parse(argv)
    times = collections.defaultdict(lambda: collections.defaultdict(list))
    rows = []
    subprocess.run([bench] + args, capture_output=True)  # warm-up (the machine's first process runs slow)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, binary, env in settings[r % len(settings):] + settings[:r % len(settings)]:
                path = os.path.join(tmp, '%s_%d.csv' % (name, r))
                run = subprocess.run([binary] + args + ['--csv', path], env=dict(os.environ, **env),
                                     capture_output=True, text=True)
                if run.returncode != 0:
                    sys.exit('bench_ab.py: %s failed (%d): %s' % (name, run.returncode, run.stderr[-2000:]))
                with open(path) as f:
                    for row in csv.DictReader(f):
                        what = row['what']
                        if what.startswith('bnb4 ') and what.endswith(' vs-cublas'):
                            if what not in times:
                                rows.append(what)
                            times[what][name].append(float(row['us']))
    names = [name for name, _, _ in settings]
    print('%-44s %s' % ('us, median of %d rounds' % rounds, ' '.join('%15s' % n for n in names)))
    for what in rows:
        base = statistics.median(times[what][names[0]])
        cells = []
        for n in names:
            v = statistics.median(times[what][n])
            cells.append('%8.2f' % v + ('' if n == names[0] else ' %+5.1f%%' % (100 * (v / base - 1))))
        print('%-44s %s' % (what[len('bnb4 '):-len(' vs-cublas')], ' '.join('%15s' % c for c in cells)))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
