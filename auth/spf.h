/*
 * spf: Sender Policy Framework (RFC 7208) on libspf2, with our own
 * handling around it where libspf2 departs from the RFC (see spf.c and
 * spfrec.c).  spf_check blocks on DNS (dns/spfdns.c): the smtp process
 * calls it only from its SPF worker threads (smtpd/policy.c), ternctl
 * check directly.  One struct spf per thread.
 */
#ifndef TERN_SPF_H
#define TERN_SPF_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct spfdns;

enum spf_result {
	SPF_NONE, SPF_NEUTRAL, SPF_PASS, SPF_FAIL, SPF_SOFTFAIL,
	SPF_TEMPERROR, SPF_PERMERROR
};

struct spf_request {
	const char	*ip;		/* client address, text */
	const char	*helo;		/* as given */
	const char	*sender;	/* MAIL FROM, "" for <> */
	int		 libonly;	/* libspf2's answer, without our fixes
					   (for measuring the RFC suite) */
	uint64_t	 deadline_ms;	/* CLOCK_MONOTONIC ms: lookups end (0:
					   libunbound's own timeouts only) */
};

#define SPF_EXP_MAX	256

struct spf_verdict {
	enum spf_result	 result;
	const char	*identity;	/* "mailfrom" or "helo" */
	char		 domain[256];	/* the identity's domain */
	char		 reason[256];	/* for the log and the header comment */
	char		 exp[SPF_EXP_MAX];	/* fail: explanation, printable
						   ASCII only; may be empty */
	uint32_t	 ttl;		/* seconds the verdict holds for the
					   same request: the least TTL of the
					   answers it read (auth/spfcache.h);
					   0: not to be reused */
};

struct spf	*spf_new(struct spfdns *, const char *receiver);
void		 spf_free(struct spf *);
void		 spf_check(struct spf *, const struct spf_request *,
		    struct spf_verdict *);

const char	*spf_result_name(enum spf_result);

/*
 * The default policy: fail refused (550 5.7.23, with the sanitised
 * explanation), temperror deferred (451 4.7.24), the rest accepted.
 * reply gets the SMTP reply line without CRLF (empty for accept).
 */
enum spf_action { SPF_ACCEPT, SPF_REJECT, SPF_TEMPFAIL };
enum spf_action	 spf_policy(const struct spf_verdict *, char *reply,
		    size_t cap);

/* "Received-SPF: ...\r\n" (RFC 7208 9.1), folded, values quoted. */
void		 spf_received_header(struct buf *, const struct spf_verdict *,
		    const struct spf_request *, const char *receiver);
/* The "spf=... smtp.mailfrom=..." part of Authentication-Results. */
void		 spf_ar_part(struct buf *, const struct spf_verdict *,
		    const struct spf_request *);

/*
 * The syntax checks libspf2 does not make (spfrec.c): 0 when record is a
 * well-formed RFC 7208 record, -1 with a reason.  Exposed for tests and
 * the fuzz target.
 */
int		 spf_record_check(const char *record, const char **why);
/* A macro-string (RFC 7208 7.1): domainspec 0 after a modifier's "=",
 * 1 a domain-spec (domain-end, no c r t), 2 explanation text (blanks and
 * c r t allowed); 0 or -1. */
int		 spf_macro_check(const char *s, size_t len, int domainspec,
		    const char **why);

/* The values macros expand to (RFC 7208 7.3); p NULL: "unknown". */
struct spf_macro_vals {
	const char	*s, *l, *o, *d, *i, *v, *h, *c, *r, *t, *p;
};
/*
 * Expand a macro-string into out; exp allows c, r and t (explanations).
 * -1 (out partly written) for a string that is not a macro-string.
 */
int		 spf_macro_expand(const char *s, size_t len,
		    const struct spf_macro_vals *, int exp, struct buf *out);
/*
 * The client address as the c and i macros give it (RFC 7208 7.3): an
 * IPv4-mapped IPv6 address as IPv4, IPv6 nibbles in upper case.  Returns
 * the v macro's value, "in-addr" or "ip6".
 */
/*
 * The p macro's name among a client's validated PTR names (RFC 7208 7.3):
 * domain itself, else a subdomain of it, else the first; "unknown" when
 * there is none.
 */
const char	*spf_macro_pick_p(char *const *names, size_t n,
		    const char *domain);
const char	*spf_macro_ip(const char *ip, char *c, size_t ccap, char *i,
		    size_t icap);

/*
 * An SPF record as libspf2 can evaluate it: the /0 prefixes it refuses
 * (RFC 7208 allows them) said another way for a client of this family,
 * some as exists: of NAME.KIND.token (KIND mx4, mx6 or a6) that the DNS
 * layer answers itself; unknown modifiers left out, redirect= beside
 * "all" too.
 */
/*
 * rec with each domain-spec of exp=, redirect=, include: and exists:
 * whose expansion (mv: d the record's domain) is over 253 bytes replaced
 * by that expansion cut from the left label by label (RFC 7208 7.3), as
 * libspf2 does not; 1 if any was.  rec is one libspf2 can parse (from
 * spf_record_rewrite).
 */
int		 spf_record_truncate(const char *rec,
		    const struct spf_macro_vals *mv, struct buf *out);
void		 spf_record_rewrite(const char *rec, int v6, const char *token,
		    struct buf *out);

#endif
