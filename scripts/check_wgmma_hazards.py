#!/usr/bin/env python3
"""check_wgmma_hazards.py - prove from the machine code (SASS) that no instruction overwrites a register an
in-flight wgmma still uses.

wgmma (HGMMA in SASS) reads its A fragments from registers and writes its accumulators asynchronously,
until a `wgmma.wait_group` (WARPGROUP.DEPBAR.LE gsb0, N) retires its group. The compiler only sees the
issue: if it reuses an A register for the next step's decode, or moves an accumulator, while the group is
in flight, the sums silently change from call to call. ptxas guards some cases by inserting waits (its note
C7517), not all: a build of the tile kernel whose two fragment sets had been merged into one register set
ran without any such wait and gave different sums on repeated calls (docs/performance.md v13, v14).

So this walks every path of every function that contains HGMMA, tracking the groups in flight (the
registers each reads or writes), and reports each instruction that writes one of them - and any indirect
branch, call or return there, whose paths it cannot follow (so a new compiler cannot make it pass by
emitting code it does not understand).

    check_wgmma_hazards.py FILE...      libraries, objects or executables (cuobjdump -sass -arch sm_90a)
    check_wgmma_hazards.py --sass FILE  a saved `cuobjdump -sass` listing
    check_wgmma_hazards.py --self-test  the checker against small listings with and without a hazard

Exit status: 0 clean, 1 hazards (or no wgmma kernel in an sm_90a build), 77 skipped (no cuobjdump: CTest
reports the test as skipped). cuobjdump and the nvdisasm it runs come with the CUDA toolkit, or from PyPI
(nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm).
"""
import glob
import os
import re
import shutil
import subprocess
import sys

SKIP = 77

# instructions that write no general register (their first operand is a predicate, a uniform register,
# memory or a barrier); everything else writes its first operand
NO_REGISTER_DEST = ('ST', 'BRA', 'SYNCS', 'WARPGROUP', 'BAR', 'EXIT', 'RED', 'ISETP', 'FSETP', 'HSETP', 'DSETP',
                    'ELECT', 'NOP', 'BSYNC', 'BSSY', 'MEMBAR', 'ERRBAR', 'CCTL', 'RET', 'CALL', 'WARPSYNC', 'PLOP3',
                    'U', 'R2UR', 'S2UR', 'DEPBAR', 'FENCE', 'PREEXIT', 'VOTEU', 'YIELD', 'LDGDEPBAR', 'LDGSTS',
                    'BPT', 'KILL', 'ACQBULK', 'ARRIVES', 'REDUX', 'PMTRIG')
WIDE2 = ('CS2R', 'IMAD.WIDE', 'DADD', 'DMUL', 'DFMA', 'F2F.F64', 'I2F.F64', 'DSETP')


def regs(token, width):
    m = re.match(r'R(\d+)$', token.split('.')[0])
    return frozenset(range(int(m.group(1)), int(m.group(1)) + width)) if m else frozenset()


def written(opcode, operands):
    if opcode.startswith(NO_REGISTER_DEST) or not operands:
        return frozenset()
    width = 4 if '.128' in opcode else 2 if ('.64' in opcode or opcode.startswith(WIDE2)) else 1
    return regs(operands[0], width)


def parse(text):
    """(predicate, opcode, operands) of an instruction's text, e.g. '@!P0 BRA 0x1c0'."""
    t = text.replace(',', ' ').replace('{', ' ').replace('}', ' ').split()
    pred = t[0] if t[0].startswith('@') else None
    if pred:
        t = t[1:]
    return pred, t[0], t[1:]


def instructions(body):
    """A function's listing as (address, instruction text) pairs, in order."""
    code = []
    for line in body.splitlines():
        m = re.match(r'\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;', line)
        if m:
            code.append((int(m.group(1), 16), m.group(2)))
    return code


def check_function(body):
    """Every hazard in one function's listing: a set of (address, instruction)."""
    code = instructions(body)
    at = {addr: i for i, (addr, _) in enumerate(code)}
    hazards = set()
    # state at a block entry: the groups in flight, oldest first (each the registers it uses)
    entries = {0: {()}}
    work, done = [0], set()
    while work:
        start = work.pop()
        for state in list(entries.get(start, ())):
            if (start, state) in done:
                continue
            done.add((start, state))
            groups, issuing = list(state), frozenset()
            i = start
            while i < len(code):
                addr, text = code[i]
                pred, op, args = parse(text)
                if op.startswith('HGMMA'):
                    n = int(re.match(r'HGMMA\.64x(\d+)', op).group(1))
                    issuing |= regs(args[0], n // 2) | regs(args[1], 4)  # accumulators (n / 2 per thread), A
                    if 'gsb0' in args:  # the group's last wgmma: committed
                        groups.append(issuing)
                        issuing = frozenset()
                elif op.startswith('WARPGROUP.DEPBAR'):
                    keep = int(args[-1], 16)
                    groups = groups[len(groups) - keep:] if keep else []
                else:
                    w = written(op, args)
                    if any(w & g for g in groups + [issuing]):
                        hazards.add((addr, text))
                if op.startswith(('BRX', 'JMX', 'JMP', 'CALL', 'RET')):  # targets this walk cannot follow
                    hazards.add((addr, text + '   <- control flow the checker does not follow'))
                if op == 'EXIT' and not pred:
                    break
                if op.startswith('BRA'):
                    target = int(args[-1], 16)
                    if target in at:
                        entries.setdefault(at[target], set()).add(tuple(groups))
                        work.append(at[target])
                    conditional = pred is not None or (len(args) > 1 and args[0].lstrip('!').startswith('P'))
                    if not conditional:
                        break
                i += 1
    return hazards


def check_listing(text, out=sys.stdout):
    """(functions with wgmma, hazards) of a cuobjdump -sass listing; prints each function's result."""
    functions, total = 0, 0
    for part in re.split(r'\n\s*Function : ', text)[1:]:
        name, body = part.split('\n', 1)
        if 'HGMMA' not in body:
            continue
        functions += 1
        hazards = check_function(body)
        total += len(hazards)
        short = re.sub(r'^.*?_cu_[0-9a-f]{8}\d+', '', name.strip())[:100]  # (the anonymous namespace's prefix)
        print('%-100s %s' % (short, 'ok' if not hazards else '%d HAZARDS' % len(hazards)), file=out)
        for addr, ins in sorted(hazards)[:10]:
            print('    /*%04x*/ %s' % (addr, ins), file=out)
    return functions, total


def find_cuobjdump():
    found = shutil.which('cuobjdump')
    if found:
        return found
    for home in (os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH'), '/usr/local/cuda'):
        if home and os.access(os.path.join(home, 'bin', 'cuobjdump'), os.X_OK):
            return os.path.join(home, 'bin', 'cuobjdump')
    for site in sys.path:  # the PyPI wheel (nvidia-cuda-cuobjdump): site-packages/nvidia/cu*/bin
        for cand in glob.glob(os.path.join(site, 'nvidia', 'cu*', 'bin', 'cuobjdump')):
            if os.access(cand, os.X_OK):
                return cand
    return None


# a double-buffered loop: the wgmmas of one fragment set (R8.., R12..) run while the other is loaded, and
# each load waits (DEPBAR.LE 1) until the group that read its registers is retired
SELF_TEST_CLEAN = """
        Function : k_clean
        /*0000*/                   LDS R8, [R2] ;
        /*0010*/                   WARPGROUP.ARRIVE ;
        /*0020*/                   HGMMA.64x16x16.F32 R24, R8, gdesc[UR4], R24, gsb0 ;
        /*0030*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;
        /*0040*/                   LDS R12, [R2+0x10] ;
        /*0050*/                   HGMMA.64x16x16.F32 R24, R12, gdesc[UR4], R24, gsb0 ;
        /*0060*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;
        /*0070*/                   LDS R8, [R2+0x20] ;
        /*0080*/              @P0 BRA 0x10 ;
        /*0090*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*00a0*/                   FADD R24, R24, R25 ;
        /*00b0*/                   EXIT ;
"""
# without the first wait: on the loop's second turn the load at 0x40 overwrites R12..R15 while the previous
# turn's second group still reads them (found only by following the back edge)
SELF_TEST_HAZARD = SELF_TEST_CLEAN.replace('k_clean', 'k_hazard').replace(
    '/*0030*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;', '/*0030*/                   NOP ;')
# the sums read (and rewritten) before the last group is retired: an accumulator hazard
SELF_TEST_ACCUMULATOR = SELF_TEST_CLEAN.replace('k_clean', 'k_accumulator').replace(
    '/*0090*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;', '/*0090*/                   NOP ;')


def self_test():
    ok = True
    for text, want in ((SELF_TEST_CLEAN, 0), (SELF_TEST_HAZARD, 1), (SELF_TEST_ACCUMULATOR, 1)):
        with open(os.devnull, 'w') as quiet:
            functions, hazards = check_listing(text, quiet)
        if functions != 1 or (hazards > 0) != bool(want):
            print('self-test FAILED: %d function(s), %d hazard(s), expected %s' % (functions, hazards,
                                                                                  'some' if want else 'none'))
            ok = False
    print('self-test %s' % ('ok' if ok else 'FAILED'))
    return 0 if ok else 1


def read_listings(argv, doc):
    """The SASS listings the command line names - `--sass FILE` (a saved `cuobjdump -sass` listing) or
    libraries, objects and executables (through cuobjdump -sass -arch sm_90a) - as (texts, None); or
    (None, exit status) once it has said why not (77: no cuobjdump or nvdisasm; 2: usage, `doc`)."""
    if len(argv) == 2 and argv[0] == '--sass':
        with open(argv[1]) as f:
            return [f.read()], None
    if not argv or argv[0].startswith('-'):
        print(doc.strip())
        return None, 2
    tool = find_cuobjdump()
    if not tool:
        print('skipped: no cuobjdump (CUDA toolkit, or pip install nvidia-cuda-cuobjdump)')
        return None, SKIP
    # cuobjdump runs nvdisasm for -sass: the one beside it first (the PyPI wheels share a folder)
    env = dict(os.environ, PATH=os.path.dirname(tool) + os.pathsep + os.environ.get('PATH', ''))
    texts = []
    for path in argv:
        r = subprocess.run([tool, '-sass', '-arch', 'sm_90a', path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, env=env)
        if r.returncode != 0 and 'nvdisasm' in r.stderr:
            print('skipped: cuobjdump found no nvdisasm (CUDA toolkit, or pip install nvidia-cuda-nvdisasm)')
            return None, SKIP
        if r.returncode != 0:
            print('%s: cuobjdump failed: %s' % (path, r.stderr.strip()[:300]))
            return None, 1
        texts.append(r.stdout)
    return texts, None


def listings_to_check(argv, doc, self_test_fn):
    """A checker's start: `--self-test` alone runs self_test_fn; anything else reads the listings
    (read_listings) and runs the self-test before they are checked. (texts, None), or (None, exit status).
    Shared with check_loop_budget.py."""
    if argv == ['--self-test']:
        return None, self_test_fn()
    texts, status = read_listings(argv, doc)
    if texts is None:
        return None, status
    if self_test_fn() != 0:
        return None, 1
    return texts, None


def main(argv):
    texts, status = listings_to_check(argv, __doc__, self_test)
    if texts is None:
        return status
    functions = hazards = 0
    for text in texts:
        f, h = check_listing(text)
        functions += f
        hazards += h
    if functions == 0:
        print('no wgmma (HGMMA) function found: nothing was checked')
        return 1
    print('%d wgmma function(s), %d hazard(s)' % (functions, hazards))
    return 1 if hazards else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
