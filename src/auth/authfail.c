/* authfail.c — the per-address AUTH failure table of authfail.h: open
 * addressing over a fixed array, AUTHFAIL_PROBE slots from a SipHash of
 * the address key, no eviction of live entries. An address that finds its
 * probe window full is counted in a second, smaller table by its network
 * (IPv4 /24, IPv6 /48), and only when that window is full too in one
 * shared overflow count: whoever fills the first table locks out newcomers
 * of its own networks, not everyone's.
 *
 * Runs in the auth service (auth/authd.c) on its event loop. The addresses are the clients' own
 * (hostile in the sense that an attacker chooses many of them). */
#include "auth/authfail.h"

#include "lib/alloc.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define AUTHFAIL_PROBE 8

struct authfail_entry {
	unsigned char addr[16];
	unsigned count;    /* failures and guesses in flight; 0: the slot is free */
	uint64_t first_ms; /* start of the window */
};

struct authfail_table {
	struct authfail_entry *slots;
	size_t n;
};

struct authfail {
	struct authfail_table addrs; /* by address (IPv6 /64) */
	struct authfail_table nets;  /* by network, for addresses that found no slot */
	unsigned char key[SIPHASH_KEY_LEN];
	struct authfail_entry overflow; /* what found no slot in either */
};

struct authfail *authfail_create(size_t slots, const unsigned char key[SIPHASH_KEY_LEN])
{
	struct authfail *t = xcalloc(1, sizeof(*t));

	t->addrs.n = slots;
	t->addrs.slots = xcalloc(slots, sizeof(*t->addrs.slots));
	t->nets.n = slots / 8 > AUTHFAIL_PROBE ? slots / 8 : AUTHFAIL_PROBE;
	t->nets.slots = xcalloc(t->nets.n, sizeof(*t->nets.slots));
	if (key != NULL) {
		memcpy(t->key, key, sizeof(t->key));
	} else if (getrandom(t->key, sizeof(t->key), 0) != (ssize_t)sizeof(t->key)) {
		fprintf(stderr, "hikyaku: getrandom failed: no key for the AUTH failure table\n");
		abort();
	}
	return t;
}

void authfail_free(struct authfail **tp)
{
	if (*tp == NULL)
		return;
	free((*tp)->addrs.slots);
	free((*tp)->nets.slots);
	free(*tp);
	*tp = NULL;
}

void authfail_addr_key(const struct sockaddr_storage *ss, unsigned char out[16])
{
	memset(out, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &sin->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		/* a v4-mapped client of a dual-stack socket is an IPv4 address */
		memcpy(out, a, IN6_IS_ADDR_V4MAPPED(a) ? 16 : 8);
	}
}

static bool authfail_live(const struct authfail_entry *e, uint64_t now, uint64_t window)
{
	return e->count > 0 && now - e->first_ms <= window;
}

/* The network of an address key: IPv4 /24, IPv6 /48. Octet 9 of an IPv4
 * key and octet 15 of an IPv6 /64 key are 0; a network key sets it, so
 * the two kinds of network key never meet. */
static void authfail_net_key(const unsigned char key[16], unsigned char out[16])
{
	static const unsigned char v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memcpy(out, key, 16);
	if (memcmp(key, v4_prefix, sizeof(v4_prefix)) == 0) {
		out[15] = 0;
		out[9] = 1;
	} else {
		memset(out + 6, 0, 10);
		out[15] = 1;
	}
}

/* key's entry in tab; else, when create, a free slot of its probe window
 * (taken). NULL when not found and nothing was taken; *full_r tells
 * whether every slot of the window was live. */
static struct authfail_entry *authfail_slot(struct authfail *t, struct authfail_table *tab,
                                            const unsigned char key[16], uint64_t now,
                                            uint64_t window, bool create, bool *full_r)
{
	struct authfail_entry *free_slot = NULL;
	uint64_t h = siphash24(t->key, key, 16);

	for (size_t i = 0; i < AUTHFAIL_PROBE && i < tab->n; i++) {
		struct authfail_entry *e = &tab->slots[(h + i) % tab->n];
		if (!authfail_live(e, now, window)) {
			if (free_slot == NULL)
				free_slot = e;
		} else if (memcmp(e->addr, key, 16) == 0) {
			*full_r = false;
			return e;
		}
	}
	*full_r = free_slot == NULL;
	if (free_slot == NULL || !create)
		return NULL;
	memcpy(free_slot->addr, key, 16);
	free_slot->count = 0;
	free_slot->first_ms = now;
	return free_slot;
}

/* The entry where the address's guesses are counted: its own; else (its
 * window full) its network's; else the shared overflow. With !create,
 * NULL where nothing was counted yet. */
static struct authfail_entry *authfail_find(struct authfail *t, const struct sockaddr_storage *ss,
                                            uint64_t now, uint64_t window, bool create)
{
	unsigned char key[16], net[16];
	bool full;

	authfail_addr_key(ss, key);
	struct authfail_entry *e = authfail_slot(t, &t->addrs, key, now, window, create, &full);
	if (e != NULL || !full)
		return e;
	authfail_net_key(key, net);
	e = authfail_slot(t, &t->nets, net, now, window, create, &full);
	if (e != NULL || !full)
		return e;
	if (!authfail_live(&t->overflow, now, window)) {
		t->overflow.count = 0;
		t->overflow.first_ms = now;
	}
	return &t->overflow;
}

int authfail_reserve(struct authfail *t, const struct sockaddr_storage *ss, uint64_t now_ms,
                     uint64_t window_ms, unsigned max)
{
	struct authfail_entry *e = authfail_find(t, ss, now_ms, window_ms, true);

	if (e->count >= max)
		return -1; /* a slot taken for this call stays free: count 0 */
	e->count++;
	return 0;
}

void authfail_release(struct authfail *t, const struct sockaddr_storage *ss, uint64_t now_ms,
                      uint64_t window_ms)
{
	struct authfail_entry *e = authfail_find(t, ss, now_ms, window_ms, false);

	if (e != NULL && e->count > 0)
		e->count--;
}

unsigned authfail_count(struct authfail *t, const struct sockaddr_storage *ss, uint64_t now_ms,
                        uint64_t window_ms)
{
	struct authfail_entry *e = authfail_find(t, ss, now_ms, window_ms, false);

	return e != NULL ? e->count : 0;
}
