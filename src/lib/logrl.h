/* logrl.h — rate suppression for repetitive log lines (a hostile client
 * must not be able to turn its own requests into log volume): at most
 * `burst` lines per window, the rest counted and reported by the owner as
 * one "event=suppressed count=N" line when the burst is over. Pure: the
 * caller passes the time; no locking (one owner, one thread). It decides
 * only whether to write a line, never how: log.c's write path is apart. */
#ifndef HK_LIB_LOGRL_H
#define HK_LIB_LOGRL_H

#include <stdbool.h>
#include <stdint.h>

struct logrl {
	unsigned burst;      /* lines let through per window */
	uint64_t window_us;
	uint64_t start_us;   /* start of the current window */
	unsigned used;       /* lines let through in it */
	uint64_t suppressed; /* lines held back and not yet reported */
};

void logrl_init(struct logrl *rl, unsigned burst, uint64_t window_us);
/* May a line be written at now_us? If not, it is counted as suppressed. */
bool logrl_allow(struct logrl *rl, uint64_t now_us);
/* Has the window of the last suppression ended (the burst is over)? */
bool logrl_burst_over(const struct logrl *rl, uint64_t now_us);
/* The lines suppressed since the last call, and reset to 0: the owner
 * reports them in one line when nonzero. */
uint64_t logrl_take(struct logrl *rl);

#endif
