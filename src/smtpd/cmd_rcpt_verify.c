/* cmd_rcpt_verify.c — recipients of relay_domains verified at their route's
 * server during the SMTP session (routes[].verify_recipients), as Postfix's
 * reject_unverified_recipient: a short LMTP/SMTP connection through smtpc
 * (LHLO/EHLO, MAIL FROM:<>, RCPT TO, then RSET/QUIT; never DATA), so an
 * unknown user gets 550 at RCPT instead of a bounce later.
 *
 * While the probe runs the session is parked in SMTPD_S_RCPT_WAIT, as
 * cmd_auth.c parks it for a password check: input is not read, so the
 * replies to pipelined commands behind this RCPT (RFC 2920) keep their
 * order. A timer bounds the wait (relay.verify_timeout); when it fires the
 * RCPT gets routes[].verify_tempfail and the probe is cancelled (smtpc's
 * own per-stage timeouts would let a tarpit hold it far longer). At most
 * VERIFY_PROBES_MAX probes are in flight per server, whatever the number
 * of sessions: past that a RCPT gets the tempfail answer without a probe,
 * so a slow backend cannot make us pile up connections.
 * Only the reply to the RCPT itself is an answer about the user: a failed
 * connection, greeting, EHLO/LHLO, STARTTLS or MAIL is a tempfail.
 * Definite answers are cached briefly (relay.verify_positive_ttl,
 * relay.verify_negative_ttl) in a fixed-size table, so a client cannot
 * grow it; a collision only costs another probe.
 *
 * Runs in smtpd on the event loop. The address comes from the client and
 * was parsed by mail/address.c; the probe's replies are parsed by smtpc. */
#include "smtpd/session.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/strutil.h"
#include "mail/idna.h"
#include "smtpc/client.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERIFY_CACHE_SLOTS 1024
#define VERIFY_TEXT_MAX 200
/* Probes in flight per smtpd server: each holds a socket for up to
 * relay.verify_timeout. A constant well below limits.connections' default
 * (1000) and the descriptor limit. */
#define VERIFY_PROBES_MAX 64

struct verify_entry {
	char addr[MAIL_PATH_MAX + 1]; /* "" for a free slot */
	uint64_t expires_us;
	int code; /* the RCPT reply: 2xx or 5xx */
	char enh[16];
	char text[VERIFY_TEXT_MAX];
};

struct verify_probe;

struct smtpd_verify {
	const struct conf *conf;
	struct smtpc *smtpc; /* our own client: its idle cache stays empty */
	struct verify_entry *cache;
	struct verify_probe *probes; /* in flight */
	size_t n_probes;
};

struct verify_probe {
	struct smtpd_verify *v;
	struct smtpd_session *s; /* NULL once the RCPT is answered */
	const struct conf_route *route;
	struct event *timer;
	struct smtpc_session *delivery; /* until its result or the timer */
	struct smtp_rcpt_args r;
	char addr[MAIL_PATH_MAX + 1];
	const char *rcpts[1];
	struct smtpc_target target;
	struct smtpc_dest dest;
	struct smtpc_msg msg;
	char unix_path[108];
	char helo[256];
	struct verify_probe *next, *prev;
};

/* FNV-1a of the address: the slot it is cached in. */
static size_t verify_slot(const char *addr)
{
	uint64_t h = 1469598103934665603ULL;
	for (const unsigned char *p = (const unsigned char *)addr; *p != '\0'; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return (size_t)(h % VERIFY_CACHE_SLOTS);
}

static const struct verify_entry *verify_cache_get(struct smtpd_verify *v, const char *addr)
{
	const struct verify_entry *e = &v->cache[verify_slot(addr)];
	if (e->addr[0] == '\0' || strcmp(e->addr, addr) != 0 || e->expires_us <= smtpd_now_us())
		return NULL;
	return e;
}

static void verify_cache_put(struct smtpd_verify *v, const struct conf *conf, const char *addr,
                             const struct smtpc_rcpt_result *rr)
{
	uint64_t ttl = rr->ok ? conf->relay.verify_positive_ttl : conf->relay.verify_negative_ttl;
	if (ttl == 0 || (!rr->ok && !rr->permanent))
		return;
	struct verify_entry *e = &v->cache[verify_slot(addr)];
	snprintf(e->addr, sizeof(e->addr), "%s", addr);
	e->expires_us = smtpd_now_us() + ttl * 1000;
	e->code = rr->ok ? 250 : rr->code / 100 == 5 ? rr->code : 550;
	snprintf(e->enh, sizeof(e->enh), "%s", rr->enh);
	size_t n = strnlen(rr->text, sizeof(e->text) - 1);
	memcpy(e->text, rr->text, n);
	e->text[n] = '\0';
}

/* The route's address as the probe's destination: "unix:/path", or a
 * numeric "host:port" / "[v6]:port" (conf_routes_check made sure). */
static int verify_dest(struct verify_probe *p, const struct conf *conf)
{
	static const enum smtpc_tls pol[] = {SMTPC_TLS_NONE, SMTPC_TLS_MAY, SMTPC_TLS_ENCRYPT,
	                                     SMTPC_TLS_VERIFY};
	const char *addr = p->route->address;
	p->dest.lmtp = p->route->transport == CONF_TRANSPORT_LMTP;
	p->dest.tls = pol[p->route->tls];
	snprintf(p->helo, sizeof(p->helo), "%s",
	         conf->delivery.helo_name[0] != '\0' ? conf->delivery.helo_name : conf->hostname);
	p->dest.helo_name = p->helo;
	p->dest.connect_timeout_ms = conf->relay.verify_timeout;
	p->dest.command_timeout_ms = conf->relay.verify_timeout;
	p->dest.data_timeout_ms = conf->relay.verify_timeout;
	if (strncmp(addr, "unix:", 5) == 0) {
		snprintf(p->unix_path, sizeof(p->unix_path), "%s", addr + 5);
		p->dest.unix_path = p->unix_path;
		return 0;
	}
	struct smtpc_target *t = &p->target;
	if (smtpc_target_parse(addr, t) != 1)
		return -1; /* a name: conf_routes_check allows only numeric hosts here */
	p->dest.targets = t;
	p->dest.ntargets = 1;
	return 0;
}

/* Answer the parked RCPT: ok (code 2xx), refused (5xx) or not known (any
 * other code, 0 for no answer), then let the session read on. */
static void verify_answer(struct smtpd_session *s, const struct conf_route *route,
                          const struct smtp_rcpt_args *r, const char *addr, int code,
                          const char *enh, const char *text, bool probed)
{
	char q[LOG_Q_MAX], qt[LOG_Q_MAX];
	const char *result = code / 100 == 2 ? "ok" : code / 100 == 5 ? "refused" : "tempfail";

	/* info for a probe (bounded by the probes), debug for an answer
	 * without one (cache hits come as fast as a client can send) */
	log_msg(probed ? LOG_LVL_INFO : LOG_LVL_DEBUG,
	        "event=rcpt_verify sid=%s rcpt=%s result=%s code=%d cached=%s text=%s", s->sid,
	        log_qs(q, addr), result, code, probed ? "no" : "yes", log_qs(qt, text));
	if (code / 100 == 2 || (code / 100 != 5 && route->verify_tempfail == CONF_VERIFY_ACCEPT)) {
		smtpd_rcpt_accept(s, r, addr);
	} else if (code / 100 == 5) {
		/* the server's own code (550 5.1.1 for an unknown user), its text
		 * on one line of printable ASCII: it goes into our reply */
		bool ok_enh = enh[0] == '5' && enh[1] == '.';
		char why[VERIFY_TEXT_MAX];
		size_t n = 0;
		for (; text[n] != '\0' && n + 1 < sizeof(why); n++)
			why[n] = text[n] >= 0x20 && text[n] < 0x7f ? text[n] : '?';
		why[n] = '\0';
		smtpd_reply(s, code >= 550 && code <= 559 ? code : 550, ok_enh ? enh : "5.1.1",
		            "<%s>: Recipient address rejected: %s", addr,
		            n > 0 ? why : "unknown user");
	} else {
		/* RFC 3463 X.4.1: no answer from the host */
		smtpd_reply(s, 450, "4.4.1",
		            "<%s>: Recipient address verification failed, try again later", addr);
	}
}

/* Unpark s after its probe answered or timed out. false: the connection
 * is gone (the session freed) and cannot be answered. */
static bool verify_unpark(struct smtpd_session *s)
{
	smtpd_session_set_state(s, s->tx != NULL && s->tx->n_rcpt_cmds > 0 ? SMTPD_S_RCPT
	                                                                   : SMTPD_S_MAIL);
	if (s->bev == NULL) {
		smtpd_session_set_state(s, SMTPD_S_CLOSING);
		smtpd_session_free(&s);
		return false;
	}
	return true;
}

static void verify_probe_free(struct verify_probe *p)
{
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		p->v->probes = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	p->v->n_probes--;
	if (p->timer != NULL)
		event_free(p->timer);
	free(p);
}

static void verify_finish(struct verify_probe *p, int code, const char *enh, const char *text)
{
	struct smtpd_session *s = p->s;
	p->s = NULL;
	if (s == NULL || !verify_unpark(s))
		return;
	/* Answered even when the client has gone (a clean EOF, a half-close
	 * after a pipelined batch, or the session deadline): the reply is owed
	 * and goes out before the close flushes the output. */
	verify_answer(s, p->route, &p->r, p->addr, code, enh, text, true);
	if (s->gone) {
		smtpd_session_close(s);
		return;
	}
	smtpd_session_resume(s);
}

static void verify_on_result(const struct smtpc_result *res, void *arg)
{
	struct verify_probe *p = arg;
	const struct smtpc_rcpt_result *rr = &res->rcpts[0];
	p->delivery = NULL; /* smtpc frees it after this callback */
	if (!rr->answered) {
		/* No reply to the RCPT itself: the greeting, EHLO/LHLO, MAIL
		 * FROM:<>, STARTTLS or the connection failed, or smtpc refused
		 * locally (SMTPUTF8 not offered). That says nothing about the
		 * user, and a misconfigured or busy backend must not turn into
		 * cached 550s for the whole domain: not known, not cached. */
		verify_finish(p, 0, "", rr->text);
		verify_probe_free(p);
		return;
	}
	verify_cache_put(p->v, p->v->conf, p->addr, rr);
	verify_finish(p, rr->ok ? 250 : rr->code / 100 == 5 ? rr->code : 0, rr->enh, rr->text);
	verify_probe_free(p);
}

static void verify_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct verify_probe *p = arg;
	(void)fd;
	(void)what;
	verify_finish(p, 0, "", "timeout");
	smtpc_cancel(&p->delivery); /* the answer is given: end the probe too */
	verify_probe_free(p);
}

static struct smtpd_verify *verify_get(struct smtpd *srv)
{
	if (srv->verify != NULL)
		return srv->verify;
	char err[256];
	struct smtpd_verify *v = xcalloc(1, sizeof(*v));
	const char *ca = srv->conf->delivery.ca_file;
	v->smtpc = smtpc_create(srv->base, ca[0] != '\0' ? ca : NULL, err, sizeof(err));
	if (v->smtpc == NULL) {
		log_err("event=rcpt_verify_error reason=\"%s\"", err);
		free(v);
		return NULL;
	}
	smtpc_set_idle_timeout(v->smtpc, 0); /* one short connection per probe */
	v->conf = srv->conf;
	v->cache = xcalloc(VERIFY_CACHE_SLOTS, sizeof(*v->cache));
	srv->verify = v;
	return v;
}

bool smtpd_rcpt_verify(struct smtpd_session *s, const struct smtp_rcpt_args *r, const char *addr)
{
	const struct conf *conf = s->srv->conf;
	if (!conf_is_relay_domain(conf, r->to.domain))
		return false;
	const struct conf_route *route = conf_route_for(conf, r->to.domain);
	if (route == NULL || !route->verify_recipients)
		return false;
	struct smtpd_verify *v = verify_get(s->srv);
	const struct verify_entry *e = v != NULL ? verify_cache_get(v, addr) : NULL;
	if (e != NULL) {
		verify_answer(s, route, r, addr, e->code, e->enh, e->text, false);
		return true;
	}
	if (v == NULL || v->n_probes >= VERIFY_PROBES_MAX) {
		verify_answer(s, route, r, addr, 0, "",
		              v == NULL ? "verification unavailable" : "too many probes in flight",
		              false);
		return true;
	}
	struct verify_probe *p = xcalloc(1, sizeof(*p));
	p->v = v;
	p->route = route;
	p->r = *r;
	snprintf(p->addr, sizeof(p->addr), "%s", addr);
	if (verify_dest(p, conf) < 0) {
		free(p);
		verify_answer(s, route, r, addr, 0, "", "bad route address", false);
		return true;
	}
	p->rcpts[0] = p->addr;
	p->msg.sender = "";
	p->msg.rcpts = p->rcpts;
	p->msg.nrcpts = 1;
	p->msg.smtputf8 = mail_str_is_utf8(addr, strlen(addr));
	p->msg.probe = true;
	p->s = s;
	p->next = v->probes;
	if (v->probes != NULL)
		v->probes->prev = p;
	v->probes = p;
	v->n_probes++;
	p->timer = evtimer_new(s->srv->base, verify_on_timer, p);
	struct timeval tv = {.tv_sec = (time_t)(conf->relay.verify_timeout / 1000),
	                     .tv_usec = (suseconds_t)(conf->relay.verify_timeout % 1000 * 1000)};
	evtimer_add(p->timer, &tv);
	smtpd_session_set_state(s, SMTPD_S_RCPT_WAIT);
	p->delivery = smtpc_deliver(v->smtpc, &p->dest, &p->msg, verify_on_result, p);
	return true;
}

void smtpd_verify_free(struct smtpd_verify **vp)
{
	struct smtpd_verify *v = *vp;
	if (v == NULL)
		return;
	*vp = NULL;
	smtpc_free(&v->smtpc); /* no callbacks: the probes go below */
	while (v->probes != NULL)
		verify_probe_free(v->probes);
	free(v->cache);
	free(v);
}
