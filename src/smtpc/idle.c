/* idle.c — the idle cache (connection reuse).
 * Part of the SMTP/LMTP client (see client.c for the whole, and
 * client_int.h for the parts). Loop thread; every reply is hostile. */
#include "smtpc/client_int.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/alloc.h"
#include "lib/log.h"
#include "tls/tls.h"

/* --- the idle cache (connection reuse) ------------------------------------ */

static bool smtpc_str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool smtpc_addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 &&
		       x->sin6_scope_id == y->sin6_scope_id;
	}
	return false;
}

/* Would this delivery have set the connection up the same way, with the
 * same server? For TCP the server must be the delivery's first target (the
 * one it would connect to, RFC 5321 §5.1 order and equal-preference
 * randomisation kept), whatever the key; the name TLS verified must be its
 * name. For a unix socket, the same key and path. */
static bool idle_matches(const struct smtpc_idle *ic, const struct smtpc_dest *d)
{
	if (ic->quitting || ic->tls != d->tls || ic->lmtp != d->lmtp ||
	    !smtpc_str_eq(ic->auth_user, d->auth_user) ||
	    !smtpc_str_eq(ic->helo_name, d->helo_name))
		return false;
	if (d->unix_path != NULL)
		return ic->addr.ss_family == AF_UNSPEC && strcmp(ic->key, d->reuse_key) == 0 &&
		       strcmp(ic->remote_addr, d->unix_path) == 0;
	if (d->ntargets == 0 || !smtpc_addr_eq(&ic->addr, &d->targets[0].addr))
		return false;
	return d->tls != SMTPC_TLS_VERIFY || strcmp(ic->host, d->targets[0].host) == 0;
}

/* Two cached connections that any delivery would take alike. */
static bool idle_same(const struct smtpc_idle *a, const struct smtpc_idle *b)
{
	if (a->quitting || b->quitting || a->tls != b->tls || a->lmtp != b->lmtp ||
	    !smtpc_str_eq(a->auth_user, b->auth_user) || !smtpc_str_eq(a->helo_name, b->helo_name))
		return false;
	if (a->addr.ss_family == AF_UNSPEC)
		return b->addr.ss_family == AF_UNSPEC && strcmp(a->key, b->key) == 0 &&
		       strcmp(a->remote_addr, b->remote_addr) == 0;
	return smtpc_addr_eq(&a->addr, &b->addr) && strcmp(a->host, b->host) == 0;
}

void smtpc_idle_free(struct smtpc_idle *ic)
{
	struct smtpc *c = ic->c;
	if (ic->prev != NULL)
		ic->prev->next = ic->next;
	else
		c->idle = ic->next;
	if (ic->next != NULL)
		ic->next->prev = ic->prev;
	c->nidle--;
	if (ic->bev != NULL) {
		/* closed by us (timeout, QUIT, limits) or by the server: no
		 * error, the session is between transactions */
		if (ic->tls_active)
			tls_bufferevent_close_notify(ic->bev);
		bufferevent_free(ic->bev);
	}
	event_free(ic->timer);
	free(ic->key);
	free(ic->auth_user);
	free(ic->helo_name);
	free(ic);
}

/* Idle, a server only speaks to say it is going away (421, RFC 5321 §3.8)
 * or, after our QUIT, to say 221: either way the connection is done. */
static void idle_on_read(struct bufferevent *bev, void *arg)
{
	struct smtpc_idle *ic = arg;
	(void)bev;
	log_debug("smtpc: relay=%s idle connection: server spoke, closing", ic->remote_mta);
	smtpc_idle_free(ic);
}

static void idle_on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtpc_idle *ic = arg;
	(void)bev;
	(void)what;
	log_debug("smtpc: relay=%s idle connection closed by the server", ic->remote_mta);
	smtpc_idle_free(ic);
}

static void idle_timer_arm(struct smtpc_idle *ic, uint64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
	                     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(ic->timer, &tv);
}

/* Idle too long: QUIT (RFC 5321 §4.1.1.10) and wait briefly for the 221. */
static void idle_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc_idle *ic = arg;
	(void)fd;
	(void)what;
	if (ic->quitting) {
		smtpc_idle_free(ic);
		return;
	}
	log_debug("smtpc: relay=%s idle timeout, QUIT", ic->remote_mta);
	ic->quitting = true;
	evbuffer_add(bufferevent_get_output(ic->bev), "QUIT\r\n", 6);
	idle_timer_arm(ic, SMTPC_QUIT_WAIT_MS);
}

/* The oldest connections of all beyond the total. */
void smtpc_idle_trim_total(struct smtpc *c)
{
	while (c->nidle > c->idle_max) {
		struct smtpc_idle *ic = c->idle;
		while (ic->next != NULL)
			ic = ic->next;
		smtpc_idle_free(ic);
	}
}

/* Keep the cache bounded: the oldest connection like the new one beyond
 * the per-destination limit, then the oldest of all beyond the total. */
static void idle_trim(struct smtpc *c, const struct smtpc_idle *nic)
{
	struct smtpc_idle *oldest = NULL;
	size_t same = 0;
	for (struct smtpc_idle *ic = c->idle; ic != NULL; ic = ic->next) {
		if (idle_same(ic, nic)) {
			same++;
			oldest = ic;
		}
	}
	if (same > c->idle_per_key && oldest != NULL)
		smtpc_idle_free(oldest);
	smtpc_idle_trim_total(c);
}

/* The transaction is over with no reply outstanding: keep the connection for
 * the next message to this destination. False when it cannot be kept. */
static bool session_park(struct smtpc_session *s, bool need_rset)
{
	struct smtpc *c = s->c;
	const struct smtpc_dest *d = s->dest;

	if (d->reuse_key == NULL || c->idle_timeout_ms == 0 || s->bev == NULL)
		return false;
	/* octets we did not ask for: the server is not where we think it is */
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0 || s->parser.len > 0)
		return false;
	struct smtpc_idle *ic = xcalloc(1, sizeof(*ic));
	ic->c = c;
	ic->timer = evtimer_new(c->base, idle_on_timer, ic);
	if (ic->timer == NULL) {
		log_err("smtpc: cannot create a timer");
		abort();
	}
	ic->key = xstrdup(d->reuse_key);
	ic->tls = d->tls;
	ic->auth_user = d->auth_user != NULL ? xstrdup(d->auth_user) : NULL;
	ic->lmtp = d->lmtp;
	ic->helo_name = d->helo_name != NULL ? xstrdup(d->helo_name) : NULL;
	ic->need_rset = need_rset;
	if (d->unix_path == NULL) {
		const struct smtpc_target *t = &d->targets[s->ti];
		if (t->addrlen <= sizeof(ic->addr))
			memcpy(&ic->addr, &t->addr, t->addrlen);
		snprintf(ic->host, sizeof(ic->host), "%s", t->host);
	}
	ic->caps = s->caps;
	ic->tls_active = s->tls_active;
	ic->authed = s->authed;
	snprintf(ic->remote_mta, sizeof(ic->remote_mta), "%s", s->res.remote_mta);
	snprintf(ic->remote_addr, sizeof(ic->remote_addr), "%s", s->res.remote_addr);
	snprintf(ic->tls_info, sizeof(ic->tls_info), "%s", s->res.tls_info);
	ic->bev = s->bev;
	s->bev = NULL;
	evtimer_del(s->timer);
	bufferevent_setwatermark(ic->bev, EV_WRITE, 0, 0);
	bufferevent_setcb(ic->bev, idle_on_read, NULL, idle_on_event, ic);
	bufferevent_enable(ic->bev, EV_READ | EV_WRITE);
	ic->next = c->idle;
	if (c->idle != NULL)
		c->idle->prev = ic;
	c->idle = ic;
	c->nidle++;
	idle_timer_arm(ic, c->idle_timeout_ms);
	log_debug("smtpc: relay=%s connection kept idle rset=%d", ic->remote_mta, need_rset);
	idle_trim(c, ic);
	return true;
}

/* The end of a transaction that left the server in a known state: park the
 * connection, or QUIT. */
enum smtpc_go smtpc_session_tx_end(struct smtpc_session *s, bool need_rset)
{
	if (session_park(s, need_rset)) {
		smtpc_session_finish(s);
		return SMTPC_STOP;
	}
	return smtpc_session_quit(s, false);
}

/* At START: take the newest idle connection for this destination, if any,
 * and go straight to the transaction (after RSET if the last one was
 * aborted). */
bool smtpc_session_reuse(struct smtpc_session *s)
{
	struct smtpc_idle *ic = s->c->idle;

	if (s->dest->reuse_key == NULL)
		return false;
	while (ic != NULL && !idle_matches(ic, s->dest))
		ic = ic->next;
	if (ic == NULL)
		return false;
	bool rset = ic->need_rset;
	s->bev = ic->bev;
	ic->bev = NULL;
	s->caps = ic->caps;
	s->tls_active = ic->tls_active;
	s->authed = ic->authed;
	s->helo_tried = s->pipelining = s->tls_fallback = false;
	s->auth_step = 0;
	s->ti = 0;
	s->reused = true;
	s->res.connected = true;
	/* the same server, maybe under another of its names (another domain's MX) */
	const char *host = s->dest->unix_path == NULL ? s->dest->targets[0].host : "";
	snprintf(s->res.remote_mta, sizeof(s->res.remote_mta), "%s",
	         host[0] != '\0' ? host : ic->remote_mta);
	snprintf(s->res.remote_addr, sizeof(s->res.remote_addr), "%s", ic->remote_addr);
	snprintf(s->res.tls_info, sizeof(s->res.tls_info), "%s", ic->tls_info);
	smtpc_idle_free(ic);
	smtp_reply_parser_init(&s->parser);
	bufferevent_setcb(s->bev, smtpc_session_on_read, NULL, smtpc_session_on_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	log_debug("smtpc: relay=%s reusing a connection rset=%d", s->res.remote_mta, rset);
	if (rset) {
		smtpc_session_send(s, "RSET\r\n"); /* RFC 5321 §4.1.1.5 */
		smtpc_session_expect(s, SMTPC_S_RSET);
	} else {
		smtpc_session_tx_start(s);
	}
	return true;
}

/* A cached connection failed before its MAIL reply: it was dropped while
 * idle (RFC 5321 §4.5.3.2.7 lets a server do so) or is closing (421). That
 * is no failure of the message: forget it and connect afresh. */
enum smtpc_go smtpc_session_reuse_failed(struct smtpc_session *s, const char *why)
{
	log_debug("smtpc: relay=%s reused connection failed (%s), reconnecting", s->res.remote_mta,
	          why);
	smtpc_session_close(s);
	s->reused = false;
	s->res.connected = false;
	s->res.permanent = false;
	s->res.dsn_offered = false;
	s->res.mail_us = 0;
	s->res.code = 0;
	s->res.enh[0] = s->res.text[0] = '\0';
	s->res.remote_mta[0] = s->res.remote_addr[0] = '\0';
	s->tx_next = s->accepted = 0;
	s->ti = 0;
	smtpc_session_connect(s);
	return SMTPC_STOP;
}

enum smtpc_go smtpc_session_on_rset(struct smtpc_session *s, const struct smtp_reply *r)
{
	if (r->code / 100 != 2) {
		char why[32];
		snprintf(why, sizeof(why), "RSET: %d", r->code);
		return smtpc_session_reuse_failed(s, why);
	}
	return smtpc_session_tx_start(s);
}
