/*
 * fuzz_pace: the reply classifier of pacing (queue/dest.c) on arbitrary
 * reply text from a remote server, and the pacing rule driven by
 * arbitrary sequences of outcomes and waits.  A class is one of
 * DEST_SIG_*; the rule keeps a rate of zero or more and a concurrency of
 * one or more, and its clock lets one recipient or more go once paced.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/dest.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct dest_pace p;
	double now = 1, allow;
	uint32_t e = 0;
	size_t i;
	int sig;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	sig = dest_classify(text);
	if (sig < DEST_SIG_NONE || sig > DEST_SIG_RCPTS)
		abort();
	free(text);
	pace_init(&p, 5);
	for (i = 0; i + 1 < size; i += 2) {
		now += (double)(data[i] & 0x3f) / 8;
		if ((data[i] & 0xc0) == 0xc0)
			pace_wait(&p, now);
		else if (data[i] & 0x80)
			e = pace_open(&p, (size_t)(data[i + 1] % 50) + 1, now);
		else
			pace_result(&p, data[i + 1] % 11, (data[i] >> 6) % 3, e,
			    now, 60, 5);
		if (p.rate < 0 || p.conc < 1 || p.conc > 5 ||
		    p.next_ok < 0 || p.rate != p.rate)
			abort();
		/* What the pacing clock lets go: nothing known, or one at
		   least, never NaN. */
		allow = pace_allow(&p, now);
		if (allow != allow || (allow != 0 && allow < 1) ||
		    (p.rate > 0) != (allow > 0))
			abort();
		(void)pace_open_now(&p, data[i] % 7, 5, now);
	}
	return 0;
}
