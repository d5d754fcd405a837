#!/usr/bin/env python3
"""bench_ab.py - A/B timings of bench_cuda under settings (environment variables, builds) in one process tree.

    bench_ab.py BENCH 'ARGS' NAME[@BENCH2]:[VAR=VALUE,...] ... [--rounds R]
    bench_ab.py --self-test      the runner against a stand-in benchmark (no GPU)

Runs `BENCH ARGS --csv FILE` once per setting and round (a setting may name its own binary after '@', to time two
builds), and prints for each of our matmul rows (the "vs-cublas" rows, one per dtype, absmax kind, shape and m) the
median time in us under each setting, its change against the first, and the spread: the widest range of one setting's
rounds (max / min - 1) - a change no larger than it is noise. Example, on the GPU machine:

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
        if i + 1 >= len(argv) or not argv[i + 1].isdigit() or int(argv[i + 1]) < 1:
            sys.exit('bench_ab.py: --rounds takes a count of at least 1')
        rounds = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    if len(argv) < 3:
        sys.exit(__doc__)
    bench, args, settings = argv[0], argv[1].split(), []
    for spec in argv[2:]:
        head, colon, envs = spec.partition(':')
        name, _, binary = head.partition('@')
        entries = [e for e in envs.split(',') if e]
        if not colon or not name or any('=' not in e for e in entries):
            sys.exit("bench_ab.py: a setting is NAME[@BENCH]:[VAR=VALUE,...], not '%s'" % spec)
        settings.append((name, binary or bench, dict(e.split('=', 1) for e in entries)))
    if len({name for name, _, _ in settings}) != len(settings):
        sys.exit('bench_ab.py: setting names must differ')
    return bench, args, settings, rounds


def run_ab(bench, args, settings, rounds):
    """The rows in first-seen order and, per row and setting name, its times over the rounds."""
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
    return rows, times


def report(rows, times, names, rounds, out=sys.stdout):
    """A row's median under each setting and its change against the first; "spread": the widest range of one
    setting's rounds (max / min - 1), so a change no larger than it reads as noise."""
    print('%-44s %s %8s' % ('us, median of %d rounds' % rounds, ' '.join('%15s' % n for n in names), 'spread'),
          file=out)
    for what in rows:
        base = statistics.median(times[what][names[0]])
        cells = []
        for n in names:
            v = statistics.median(times[what][n])
            cells.append('%8.2f' % v + ('' if n == names[0] else ' %+5.1f%%' % (100 * (v / base - 1))))
        spread = max(max(times[what][n]) / min(times[what][n]) - 1 for n in names)
        print('%-44s %s %7.1f%%' % (what[len('bnb4 '):-len(' vs-cublas')], ' '.join('%15s' % c for c in cells),
                                    100 * spread), file=out)


# a stand-in for bench_cuda: logs each run (its FAKE_TAG) and writes one row of ours at FAKE_US + 0.1 x its run
# number, one cuBLAS row and one bandwidth row (neither of them ours to compare)
FAKE_BENCH = """import os, sys
log = os.environ['FAKE_LOG']
n = sum(1 for _ in open(log)) if os.path.exists(log) else 0
with open(log, 'a') as f:
    f.write(os.environ.get('FAKE_TAG', 'warm-up') + '\\n')
if '--csv' in sys.argv:
    us = float(os.environ.get('FAKE_US', '10')) + 0.1 * n
    with open(sys.argv[sys.argv.index('--csv') + 1], 'w') as f:
        f.write('what,us,value,unit,ceiling,ratio\\n')
        f.write('cublas f16 64x256 m=1,5.0,1,TFLOP/s,0,0\\n')
        f.write('bnb4 f16 plain 64x256 m=1 vs-cublas,%.3f,1,TFLOP/s,1,1\\n' % us)
        f.write('bnb4 f16 plain 64x256 m=1 weight-BW/copy,%.3f,1,GB/s,1,1\\n' % us)
"""


def self_test():
    import io
    with tempfile.TemporaryDirectory() as tmp:
        bench = os.path.join(tmp, 'bench')
        with open(bench, 'w') as f:
            f.write('#!%s\n%s' % (sys.executable, FAKE_BENCH))
        os.chmod(bench, 0o755)
        os.environ['FAKE_LOG'] = os.path.join(tmp, 'log')
        argv = [bench, '--no-f32', 'a:FAKE_TAG=a', 'b@%s:FAKE_TAG=b,FAKE_US=8' % bench, 'c:FAKE_TAG=c', '--rounds',
                '3']
        bench_, args, settings, rounds = parse(argv)
        rows, times = run_ab(bench_, args, settings, rounds)
        with open(os.environ['FAKE_LOG']) as f:
            order = f.read().split()
        out = io.StringIO()
        report(rows, times, [n for n, _, _ in settings], rounds, out)
    # runs 1..9 after the warm-up (run 0): a b c, then b c a, then c a b; a's times 10.1, 10.6, 10.8 (median 10.6),
    # b's 8.2, 8.4, 8.9 (8.4, -20.8 %), c's 10.3, 10.5, 10.7 (10.5, -0.9 %); the widest range b's, 8.9 / 8.2 - 1
    checks = [
        order == ['warm-up', 'a', 'b', 'c', 'b', 'c', 'a', 'c', 'a', 'b'],
        rows == ['bnb4 f16 plain 64x256 m=1 vs-cublas'],
        [round(statistics.median(times[rows[0]][n]), 3) for n in 'abc'] == [10.6, 8.4, 10.5],
        '10.60' in out.getvalue() and '8.40 -20.8%' in out.getvalue() and '10.50  -0.9%' in out.getvalue(),
        out.getvalue().splitlines()[1].endswith('    8.5%') and out.getvalue().splitlines()[0].endswith('spread'),
    ]
    for bad in (['bench', '', 'x:', 'x:A=1'], ['bench', '', 'x:A'], ['bench', '', 'x'], ['bench', '', 'x:', '--rounds']):
        try:
            parse(bad)
            checks.append(False)
        except SystemExit:
            checks.append(True)  # (two settings of one name, a variable without a value, no colon, no count)
    ok = all(checks)
    print('self-test %s%s' % ('ok' if ok else 'FAILED', '' if ok else ': %s' % checks))
    return 0 if ok else 1


def main(argv):
    if argv == ['--self-test']:
        return self_test()
    bench, args, settings, rounds = parse(argv)
    rows, times = run_ab(bench, args, settings, rounds)
    report(rows, times, [name for name, _, _ in settings], rounds)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
