/* dmarc.h — DMARC (RFC 7489): the policy record parser, policy discovery at
 * the From domain and then at its organizational domain (public suffix list
 * through libpsl), identifier alignment of SPF and DKIM results, and the
 * disposition after p, sp and pct.
 *
 * Three layers: dmarc_record_parse() is pure (bytes in, a record or an
 * error out); dmarc_discover() is asynchronous, over a resolver interface
 * (dmarc_resolver: DNS in smtpd, a table in tests); dmarc_evaluate() is
 * pure again. Runs in smtpd on the event loop; DNS answers and the From
 * field are hostile.
 *
 * Documented choices where the RFC leaves room:
 *   - A From field that is missing, repeated, or that names no usable
 *     author domain gives DMARC_PERMERROR with the disposition REJECT
 *     (§6.6.1: such messages are outside what DMARC can evaluate, and RFC
 *     5322 §3.6 requires exactly one From): the caller enforces it like a
 *     p=reject failure (subject to dauth.dmarc_enforce).
 *   - Several authors in one From with different domains: the same.
 *     Several authors of one domain are evaluated with that domain.
 *   - Several DMARC records at the name that is used: DMARC_PERMERROR,
 *     no policy applied (§6.6.3 says to apply none; permerror tells why).
 *   - A record with an invalid or missing p: p=none when it has a valid
 *     rua (§6.6.3 step 6.1), else DMARC_PERMERROR and no policy. */
#ifndef HK_DAUTH_DMARC_H
#define HK_DAUTH_DMARC_H

#include <stdbool.h>
#include <stddef.h>

#define DMARC_DOMAIN_MAX 253
#define DMARC_RUA_MAX 8 /* rua URIs kept */

enum dmarc_policy {
	DMARC_P_NONE,
	DMARC_P_QUARANTINE,
	DMARC_P_REJECT,
};

struct dmarc_record {
	enum dmarc_policy p;
	enum dmarc_policy sp; /* p when not given */
	bool adkim_strict;    /* adkim=s */
	bool aspf_strict;     /* aspf=s */
	unsigned pct;         /* 0..100, 100 when not given */
	size_t nrua;          /* valid rua URIs (mailto: only are counted) */
	char rua[DMARC_RUA_MAX][256];          /* "mailto:addr", the !size suffix cut */
	unsigned long long rua_max[DMARC_RUA_MAX]; /* its !size in octets, 0: no limit */
};

/* Parse one TXT record. Returns 0 (a policy record in *r), 1 when it is
 * not a DMARC record (does not start with v=DMARC1: discarded, §6.6.3), or
 * -1 for a DMARC record that cannot be used (*error_r says why). */
int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *r, const char **error_r);

/* ---- the resolver the checks use ---- */

enum dmarc_dns_status {
	DMARC_DNS_OK,       /* txts[0..n) (n may be 0: no TXT records) */
	DMARC_DNS_NXDOMAIN, /* the name does not exist */
	DMARC_DNS_TEMPFAIL, /* SERVFAIL, timeout */
};
typedef void dmarc_txt_cb(enum dmarc_dns_status st, const char *const *txts, size_t n, void *arg);
struct dmarc_resolver {
	/* Look up the TXT records of name; cb is called once, from inside
	 * the call or later. Returns a handle for cancel while it is pending
	 * (NULL when cb was already called). */
	void *(*txt)(void *ctx, const char *name, dmarc_txt_cb *cb, void *arg);
	void (*cancel)(void *ctx, void *handle);
	void *ctx;
};

struct dns;
/* The resolver over src/dns (dns_resolve_raw, TXT). */
void dmarc_resolver_dns(struct dmarc_resolver *r, struct dns *dns);

/* ---- the context: the public suffix list ---- */

struct dmarc;
/* Loads the public suffix list (the system's file when there is one, else
 * libpsl's built-in list): before the sandbox. */
struct dmarc *dmarc_create(void);
void dmarc_free(struct dmarc **d);
/* The organizational domain of domain (RFC 7489 §3.2): the registrable
 * domain, lowercased, into out; the domain itself when it is a public
 * suffix or the list does not know it. */
void dmarc_org_domain(const struct dmarc *d, const char *domain, char *out, size_t outlen);

/* ---- policy discovery (§6.6.3) ---- */

enum dmarc_status {
	DMARC_NONE, /* no policy published */
	DMARC_PASS,
	DMARC_FAIL,
	DMARC_TEMPERROR, /* DNS failed: try later */
	DMARC_PERMERROR, /* a record or a From that cannot be used */
};
const char *dmarc_status_name(enum dmarc_status st); /* "pass", ... (RFC 7489 §11.2) */
const char *dmarc_policy_name(enum dmarc_policy p);

struct dmarc_policy_found {
	enum dmarc_status status; /* DMARC_PASS here means "a record was found" */
	struct dmarc_record rec;
	bool at_org;                       /* found at the organizational domain */
	char domain[DMARC_DOMAIN_MAX + 1]; /* where: the From or the org domain */
	const char *reason;                /* none/permerror/temperror: why */
};
typedef void dmarc_discover_cb(const struct dmarc_policy_found *f, void *arg);
struct dmarc_discovery;
/* Find the policy for from_domain (lowercase A-labels). cb is called
 * once, from inside the call (then NULL is returned) or later. */
struct dmarc_discovery *dmarc_discover(struct dmarc *d, const struct dmarc_resolver *res,
                                       const char *from_domain, dmarc_discover_cb *cb, void *arg);
void dmarc_discovery_cancel(struct dmarc_discovery **q);

/* ---- evaluation (§3.1 alignment, §6.6.2, §6.6.4) ---- */

struct dmarc_dkim_sig {
	const char *domain; /* d= */
	bool pass;          /* the signature verified (rsa-sha1 never counts) */
};

struct dmarc_input {
	const char *from_domain; /* the author domain; NULL: From unusable */
	const char *from_error;  /* why it is unusable ("no From field", ...) */
	const char *spf_domain;  /* the domain SPF checked: MAIL FROM's, or HELO's for <> */
	bool spf_pass;
	const struct dmarc_dkim_sig *dkim;
	size_t ndkim;
	unsigned sample; /* 0..99, uniform: for pct (tests fix it) */
};

enum dmarc_disposition {
	DMARC_DISP_NONE,
	DMARC_DISP_QUARANTINE,
	DMARC_DISP_REJECT,
};

struct dmarc_result {
	enum dmarc_status status;
	enum dmarc_policy policy;    /* the p or sp that applied (fail) */
	enum dmarc_disposition disp; /* what the domain asks for this message */
	bool spf_aligned, dkim_aligned;
	const char *reason; /* for permerror/temperror/none */
};

void dmarc_evaluate(const struct dmarc *d, const struct dmarc_input *in,
                    const struct dmarc_policy_found *found, struct dmarc_result *out);

#endif
