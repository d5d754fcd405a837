#!/usr/bin/env python3
"""check_loop_budget.py - hold the matmul kernels' main loops to their measured instruction counts.

The pipe kernel's loops at m <= 64 pay for instructions added to them (docs/performance.md v18: every
decode instruction added per warp and step cost ~0.25 us at m = 1 on 28672x8192; v19: removing slot
bookkeeping beside the decode bought nothing, so a shorter loop is not by itself faster), and the
compiler adds instructions for reasons far from the loop: a generic pointer turned into a per-step
rebuild of the shared window's base (35 adds per step in the wgmma loop, v17), a barrier address
rebuilt from %cgactaid (4-5, v18). The tile kernel's k-split loop (m = 65..128) is bound by its warps'
decode chain too (v27-v29). So this reads the machine code (SASS) of each budgeted kernel, finds
its main loop (the smallest backward branch around a tensor-core instruction) and checks its length
against the budget below and that nothing in it spills (LDL / STL). A change that makes a loop longer
must say so here.

    check_loop_budget.py FILE...      libraries, objects or executables (cuobjdump -sass -arch sm_90a)
    check_loop_budget.py --sass FILE  a saved `cuobjdump -sass` listing
    check_loop_budget.py --self-test  the loop finder against a small listing

Exit status: 0 within budget, 1 over budget / spilling / a budgeted kernel missing, 77 skipped (no
cuobjdump or nvdisasm: CTest reports the test as skipped).
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_wgmma_hazards import instructions, listings_to_check, parse  # noqa: E402 (the sibling script's helpers)

# gemm_4bit_pipe_kernel<T, NT, NESTED, TMA, WG, PS, CT, CPS>: its template arguments after the type up to PS, as
# mangled (Li<NT>E, Lb<0|1>E for NESTED and TMA, Li<n>E for WG and PS; CT's Lb1E, nested codes by tile, is
# reported apart with the same budget) -> (what it runs, instructions per warp and step at
# most). The measured counts (nvcc 13.0, v18; nested v27) plus 4 for register allocation's whims.
BUDGETS = {
    # (nested at m <= 32: a row's two nested absmax per window instead of a load per step, v45: 136 -> 129 at m <= 8)
    'Li1ELb0ELb1ELi0ELi1E': ('m = 1..8 post-scaled mma.sync, plain', 113 + 4),
    'Li1ELb1ELb1ELi0ELi1E': ('m = 1..8 post-scaled mma.sync, nested', 129 + 4),
    # narrow tiles (32 rows x 1024-k steps, v30): the same loop as 128-row tiles'
    'Li1ELb0ELb1ELi0ELi2E': ('m = 1..8 post-scaled narrow, plain', 112 + 4),
    'Li1ELb1ELb1ELi0ELi2E': ('m = 1..8 post-scaled narrow, nested', 129 + 4),
    'Li2ELb0ELb1ELi0ELi2E': ('m = 9..16 post-scaled narrow, plain', 131 + 4),
    'Li2ELb1ELb1ELi0ELi2E': ('m = 9..16 post-scaled narrow, nested', 150 + 4),
    'Li2ELb0ELb1ELi0ELi1E': ('m = 9..16 post-scaled mma.sync, plain', 134 + 4),
    'Li2ELb1ELb1ELi0ELi1E': ('m = 9..16 post-scaled mma.sync, nested', 155 + 4),
    'Li2ELb0ELb1ELi1ELi0E': ('m = 9..16 wgmma, plain', 150 + 4),
    'Li4ELb0ELb1ELi1ELi0E': ('m = 17..32 wgmma, plain', 153 + 4),
    'Li4ELb1ELb1ELi1ELi0E': ('m = 17..32 wgmma, nested, blocksize 32', 177 + 4),
    'Li8ELb0ELb1ELi1ELi0E': ('m = 33..64 wgmma, plain', 154 + 4),
    'Li8ELb1ELb1ELi1ELi0E': ('m = 33..64 wgmma, nested, blocksize 32', 185 + 4),
    # nested at blocksize 64 (kWgPermuted64, v46): a pair of lanes shares a block, so each decodes one row's scale
    'Li2ELb1ELb1ELi8ELi0E': ('m = 9..16 wgmma, nested, blocksize 64', 164 + 4),
    'Li4ELb1ELb1ELi8ELi0E': ('m = 17..32 wgmma, nested, blocksize 64', 164 + 4),
    'Li8ELb1ELb1ELi8ELi0E': ('m = 33..64 wgmma, nested, blocksize 64', 174 + 4),
    # wgmma on the activations as they are, blocksize 64 (weights up to 5 x 2^24 elements; four scales a row):
    # at m <= 32 whole-half reads, byte c picked by the table offset's PRMT (v35); at m = 33..64 the quad's
    # byte trade, 16 PRMT, 6 SHFL and 16 SEL a step (v26)
    'Li2ELb0ELb1ELi2ELi0E': ('m = 9..16 wgmma natural, plain', 145 + 4),  # post-scaled groups (v38)
    'Li4ELb0ELb1ELi2ELi0E': ('m = 17..32 wgmma natural, plain', 163 + 4),
    # nested: the quad's lanes decode one (row, block) scale each and trade them by shuffles (v42: 207, 244)
    'Li2ELb1ELb1ELi2ELi0E': ('m = 9..16 wgmma natural, nested', 154 + 4),  # (v45: nested from m = 9 here)
    'Li4ELb1ELb1ELi2ELi0E': ('m = 17..32 wgmma natural, nested', 174 + 4),
    'Li8ELb0ELb1ELi2ELi0E': ('m = 33..64 wgmma natural, plain', 194 + 4),
    'Li8ELb1ELb1ELi2ELi0E': ('m = 33..64 wgmma natural, nested', 219 + 4),
}
# gemm_4bit_tile_kernel<T, BX, SRC>: Li<BX>E and the scale source (TileScales: 0 the pre-pass's pairs, 1 plain
# absmax from the weight) -> the same. The k split's loop at 128 activation rows (a group's
# step: decode, 4 wgmmas, their wait, the release; v29; from absmax: the step's run offset, 2 loads and 2
# roundings where it loaded 4 pairs, v41). The 256-row loop runs two steps a turn and its smallest enclosing
# loop holds the tile's end too (~4150 instructions), so it has no length budget (None), only the spill check: a
# tile end that needs more registers than the loop leaves made ptxas spill the loop's per-thread offsets,
# reloaded at every step (a fix-up tried in v37).
TILE_BUDGETS = {
    'Li128ELNS_10TileScalesE0E': ('m = 65..128, 257..384 tile, k split', 106 + 4),
    'Li128ELNS_10TileScalesE1E': ('m = 65..128, 257..384 tile, k split, absmax', 104 + 4),
    'Li256ELNS_10TileScalesE0E': ('m >= 129 tile, 256 rows (with the tile end)', None),
    'Li256ELNS_10TileScalesE1E': ('m >= 129 tile, 256 rows (with the tile end), absmax', None),
}
KERNELS = (('gemm_4bit_pipe_kernel', BUDGETS), ('gemm_4bit_tile_kernel', TILE_BUDGETS))
DTYPES = (('6__half', 'f16'), ('13__nv_bfloat16', 'bf16'))


def main_loop(body):
    """(instructions, spills) of the smallest loop that holds a tensor-core instruction, or None."""
    code = instructions(body)
    mma = [addr for addr, text in code if parse(text)[1].startswith(('HMMA', 'HGMMA'))]
    best = None
    for addr, text in code:
        _, op, args = parse(text)
        if op.startswith('BRA') and args:
            target = int(args[-1], 16)
            if target < addr and any(target <= a <= addr for a in mma):
                loop = [t for a, t in code if target <= a <= addr]
                if best is None or len(loop) < len(best):
                    best = loop
    if best is None:
        return None
    spills = sum(1 for t in best if parse(t)[1].startswith(('LDL', 'STL')))
    return len(best), spills


def check_listing(text, out=sys.stdout):
    """(kernels checked, failures) of a cuobjdump -sass listing; prints a line per budgeted kernel."""
    seen, failures = set(), 0
    for part in re.split(r'\n\s*Function : ', text)[1:]:
        name, body = part.split('\n', 1)
        budgets = next((b for kernel, b in KERNELS if kernel in name), None)
        if budgets is None:
            continue
        for mangled, dt in DTYPES:
            for key, (what, budget) in budgets.items():
                # (the pipe kernel's seventh argument, CT: nested codes by tile - the same loop budget; its eighth,
                # CPS, the cp.async variant's stage count on smaller devices, is 0 in the TMA kernels budgeted here;
                # its ninth, FH: the hand-over by flags on stream-K grids - the same loop budget; its tenth, NR: rows of
                # one nested block each - the same budget, the loop a few instructions shorter)
                hit = re.search('I' + re.escape(mangled + key) + '(?:Lb([01])E)?(?:Li0E)?(?:Lb([01])E)?(?:Lb([01])E)?E',
                                name)
                if not hit:
                    continue
                seen.add((dt, what))
                if hit.group(1) == '1':
                    what += ', by tile'
                if hit.group(2) == '1':
                    what += ', flags'
                if hit.group(3) == '1':
                    what += ', row nab'
                found = main_loop(body)
                if found is None:
                    print('%-5s %-52s no loop with a tensor-core instruction found: FAILED' % (dt, what), file=out)
                    failures += 1
                    continue
                n, spills = found
                bad = (budget is not None and n > budget) or spills
                failures += bool(bad)
                size = ('instructions per warp and step (budget %d)' % budget if budget is not None
                        else 'instructions in the loop (no length budget)')
                print('%-5s %-52s %4d %s%s%s' % (dt, what, n, size, ', %d spill accesses' % spills if spills else '',
                       ': FAILED' if bad else ''), file=out)
    for mangled, dt in DTYPES:
        for key, (what, _) in [item for _, b in KERNELS for item in b.items()]:
            if (dt, what) not in seen:
                print('%-5s %-52s not in the listing: FAILED' % (dt, what), file=out)
                failures += 1
    return len(seen), failures


# a loop of 5 instructions around an HMMA, behind a longer outer loop
SELF_TEST = """
        Function : _ZN4anon21gemm_4bit_pipe_kernelI6__halfLi1ELb0ELb1ELi0ELi1EEEvv
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDS R2, [R0] ;
        /*0020*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0030*/                   IADD3 R0, R0, 0x10, RZ ;
        /*0040*/                   ISETP.NE.AND P0, PT, R0, R3, PT ;
        /*0050*/              @P0 BRA 0x10 ;
        /*0060*/                   STL [R1], R4 ;
        /*0070*/              @P1 BRA 0x0 ;
        /*0080*/                   EXIT ;
"""


# the same with a spill in the loop
SELF_TEST_SPILL = SELF_TEST.replace('/*0030*/                   IADD3 R0, R0, 0x10, RZ ;',
                                    '/*0030*/                   STL [R1], R4 ;')


def self_test():
    missing = 2 * (len(BUDGETS) + len(TILE_BUDGETS)) - 1  # (the listing holds one budgeted kernel)
    with open(os.devnull, 'w') as quiet:
        results = [main_loop(SELF_TEST.split('Function : ', 1)[1]), check_listing(SELF_TEST, quiet),
                   check_listing(SELF_TEST_SPILL, quiet)]
    ok = results == [(5, 0), (1, missing), (1, missing + 1)]
    print('self-test %s%s' % ('ok' if ok else 'FAILED', '' if ok else ': %s' % (results,)))
    return 0 if ok else 1


def main(argv):
    texts, status = listings_to_check(argv, __doc__, self_test)
    if texts is None:
        return status
    failures = 0
    for text in texts:
        failures += check_listing(text)[1]
    print('%s' % ('every budgeted loop within its budget' if not failures else '%d FAILED' % failures))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
