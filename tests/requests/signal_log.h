/* For programs that drive a ZMM_REQUEST=signal request themselves (sigqueue
 * to their own pid, as `zmm request PID begin|end` does) and wait for its
 * report in ZMM_LOG (JSON: one line per request). */
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&t, &t) != 0) {
    }
}

/* 1: begin the process-wide request, 2: end it. */
static void send_toggle(int value) {
    union sigval v;
    v.sival_int = value;
    if (sigqueue(getpid(), SIGUSR2, v) != 0) exit(2);
}

/* The same, then time for the reporter thread to act. */
static void toggle(int value) {
    send_toggle(value);
    pause_ms(100);
}

/* Lines in the log: one JSON object per request. */
static int reports(const char* log) {
    int fd = open(log, O_RDONLY);
    if (fd < 0) return 0;
    char buf[4096];
    int lines = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
    close(fd);
    return lines;
}

static void wait_for(const char* log, int count) {
    for (int i = 0; i < 500 && reports(log) < count; ++i) pause_ms(10);
    if (reports(log) < count) {
        fprintf(stderr, "FAIL: report %d never came\n", count);
        exit(1);
    }
}
