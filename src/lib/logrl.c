/* logrl.c — rate suppression for repetitive log lines; see logrl.h. Any
 * thread, one owner per struct. */
#include "lib/logrl.h"

void logrl_init(struct logrl *rl, unsigned burst, uint64_t window_us)
{
	rl->burst = burst;
	rl->window_us = window_us;
	rl->start_us = 0;
	rl->used = 0;
	rl->suppressed = 0;
}

bool logrl_burst_over(const struct logrl *rl, uint64_t now_us)
{
	/* a clock that went back ends the window too */
	return now_us < rl->start_us || now_us - rl->start_us >= rl->window_us;
}

bool logrl_allow(struct logrl *rl, uint64_t now_us)
{
	if (rl->used == 0 || logrl_burst_over(rl, now_us)) {
		rl->start_us = now_us;
		rl->used = 0;
	}
	if (rl->used < rl->burst) {
		rl->used++;
		return true;
	}
	rl->suppressed++;
	return false;
}

uint64_t logrl_take(struct logrl *rl)
{
	uint64_t n = rl->suppressed;
	rl->suppressed = 0;
	return n;
}
