/* runstat [-e NAME=VALUE]... [-t SECONDS] -o FILE -- PROGRAM [ARGS...]
 *
 * scripts/bench's stopwatch: runs PROGRAM with the given variables set in the
 * child only (so LD_PRELOAD applies to the measured program, never to the
 * wrapper or the shell), and writes one line to FILE:
 *
 *   <wall seconds> <peak RSS KiB> <status> <CPU seconds, user + system>
 *
 * where status is "ok", "exit-N", "crash-N" (killed by signal N; the shell
 * would say exit 128+N) or "timeout". Wall time is CLOCK_MONOTONIC around
 * fork/wait; peak RSS and CPU time are the child's, from wait4 (CPU time
 * tells a busy machine from a slow allocator). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t child;
static volatile sig_atomic_t timed_out;
static void on_alarm(int sig) {
  (void)sig;
  timed_out = 1;
  kill(child, SIGKILL);
}

int main(int argc, char** argv) {
  const char* out = NULL;
  unsigned timeout = 0;
  int i = 1;
  for (; i < argc && strcmp(argv[i], "--") != 0; ++i) {
    if (!strcmp(argv[i], "-e") && i + 1 < argc) {
      putenv(argv[++i]); /* inherited by the child */
    } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
      timeout = (unsigned)atoi(argv[++i]);
    } else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
      out = argv[++i];
    } else {
      fprintf(stderr, "usage: runstat [-e NAME=VALUE]... [-t SECONDS] -o FILE -- PROGRAM [ARGS...]\n");
      return 2;
    }
  }
  if (!out || i + 1 >= argc) {
    fprintf(stderr, "runstat: need -o FILE and a program after --\n");
    return 2;
  }
  FILE* f = fopen(out, "w");
  if (!f) {
    perror(out);
    return 2;
  }

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  child = fork();
  if (child < 0) {
    perror("fork");
    return 2;
  }
  if (child == 0) {
    execvp(argv[i + 1], argv + i + 1);
    perror(argv[i + 1]);
    _exit(127);
  }
  if (timeout) {
    signal(SIGALRM, on_alarm);
    alarm(timeout);
  }
  int status;
  struct rusage ru;
  while (wait4(child, &status, 0, &ru) < 0) {
    /* EINTR from the alarm: the child is being killed, wait again */
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  alarm(0);

  double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  fprintf(f, "%.6f %ld ", wall, ru.ru_maxrss);
  if (timed_out) fprintf(f, "timeout");
  else if (WIFSIGNALED(status)) fprintf(f, "crash-%d", WTERMSIG(status));
  else if (WEXITSTATUS(status) != 0) fprintf(f, "exit-%d", WEXITSTATUS(status));
  else fprintf(f, "ok");
  fprintf(f, " %.6f\n", cpu);
  fclose(f);
  return 0;
}
