// SPDX-License-Identifier: Apache-2.0
/*
 * load: the system calls the benchmark makes.
 *
 *   load getpid CALLS RUNS   getpid in a tight loop, RUNS times; prints the
 *                            ns per call of each run (ebpf_exporter's method)
 *   load fill START COUNT    prctl(FILL_MAGIC, start, count) in chunks, which
 *                            keys.bpf.c turns into map keys
 *   load base ADDRESS        prctl(BASE_MAGIC, address): the first address of
 *                            keys.bpf.c's kernel text shape
 *   load evictor BYTES       holds a BYTES buffer and, for each byte read on
 *                            stdin, writes a line of every 64 bytes of it
 *                            (pushing what a map held out of the CPU caches),
 *                            then answers with a byte on stdout; ends at EOF.
 *                            One buffer for the whole bench: this VM hands
 *                            freed memory back to its host (virtio-balloon
 *                            free page reporting), and the next process to
 *                            touch fresh memory paid for a freed buffer.
 *   load rss FILE CMD ARG... runs CMD, passing SIGINT and SIGTERM on to it,
 *                            and writes its peak RSS in KiB to FILE; exits
 *                            with its status. Forked from this small process,
 *                            not from the Python driver: a child's ru_maxrss
 *                            starts at the peak RSS of the process it was
 *                            forked from (exec keeps it).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FILL_MAGIC 0x62706673UL
#define BASE_MAGIC 0x62706674UL
#define FILL_CHUNK 100000UL

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static pid_t child;

static void forward(int sig)
{
	if (child > 0)
		kill(child, sig);
}

static int run_measured(const char *file, char **argv)
{
	struct sigaction action = { .sa_handler = forward };
	struct rusage usage;
	int status;
	FILE *out;

	sigaction(SIGINT, &action, NULL);
	sigaction(SIGTERM, &action, NULL);
	child = fork();
	if (child < 0)
		return perror("fork"), 1;
	if (child == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		execvp(argv[0], argv);
		perror(argv[0]);
		_exit(127);
	}
	while (wait4(child, &status, 0, &usage) < 0)
		; /* EINTR: a forwarded signal */
	out = fopen(file, "w");
	if (out) {
		fprintf(out, "%ld\n", usage.ru_maxrss);
		fclose(out);
	}
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

static int evictor(size_t bytes)
{
	volatile char *buffer = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	char request;

	if (buffer == MAP_FAILED)
		return perror("mmap"), 1;
	for (unsigned long round = 0; read(0, &request, 1) == 1; round++) {
		for (size_t at = 0; at < bytes; at += 64)
			buffer[at] = (char)(at + round);
		if (write(1, "k", 1) != 1)
			return perror("write"), 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && strcmp(argv[1], "rss") == 0)
		return run_measured(argv[2], argv + 3);
	if (argc == 4 && strcmp(argv[1], "getpid") == 0) {
		long calls = atol(argv[2]), runs = atol(argv[3]);

		for (long r = 0; r < runs; r++) {
			double start = now_ns();

			for (long i = 0; i < calls; i++)
				syscall(SYS_getpid);
			printf("%.2f\n", (now_ns() - start) / calls);
			fflush(stdout);
		}
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "fill") == 0) {
		unsigned long start = strtoul(argv[2], NULL, 0), count = strtoul(argv[3], NULL, 0);

		for (unsigned long done = 0; done < count; done += FILL_CHUNK) {
			unsigned long n = count - done < FILL_CHUNK ? count - done : FILL_CHUNK;

			syscall(SYS_prctl, FILL_MAGIC, start + done, n, 0UL, 0UL);
		}
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "evictor") == 0)
		return evictor(strtoul(argv[2], NULL, 0));
	if (argc == 3 && strcmp(argv[1], "base") == 0) {
		syscall(SYS_prctl, BASE_MAGIC, strtoul(argv[2], NULL, 0), 0UL, 0UL, 0UL);
		return 0;
	}
	fprintf(stderr, "usage: load getpid CALLS RUNS | load fill START COUNT | load base ADDRESS"
		" | load evictor BYTES | load rss FILE CMD...\n");
	return 2;
}
