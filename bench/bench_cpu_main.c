/* bench_cpu_main.c - the bench_cpu program: a main() around bnb4_bench_cpu_main (bench_cpu.c), which the
 * `bnb4 bench` command also calls. */
int bnb4_bench_cpu_main(int argc, char **argv);

int main(int argc, char **argv) { return bnb4_bench_cpu_main(argc, argv); }
