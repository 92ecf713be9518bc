/*
 * dmarc: Domain-based Message Authentication, Reporting and Conformance
 * (RFC 7489), pure: the policy record's grammar, the From: domain of a
 * header, the organizational domain (libpsl with the publicsuffix data),
 * policy discovery through a TXT lookup the caller supplies, identifier
 * alignment, pct sampling and the resulting disposition.  The smtp
 * process runs discovery in its SPF worker threads (smtpd/policy.c, the
 * lookups through dns/spfdns.c), ternctl check directly; unit tests and
 * the fuzz target give it canned answers.
 */
#ifndef TERN_DMARC_H
#define TERN_DMARC_H

#include <stddef.h>
#include <stdint.h>

#include "auth/spf.h"

struct buf;

/* Requested policies (p=, sp=, np=) and dispositions, weakest first. */
enum dmarc_policy { DMARC_POL_UNSET = -1, DMARC_POL_NONE = 0,
	DMARC_POL_QUARANTINE, DMARC_POL_REJECT };

/* The dmarc= result of Authentication-Results (RFC 7489 11.3). */
enum dmarc_result { DMARC_RES_NONE, DMARC_RES_PASS, DMARC_RES_FAIL,
	DMARC_RES_TEMPERROR, DMARC_RES_PERMERROR };

#define DMARC_URI_MAX	512

struct dmarc_record {
	int	 p;		/* enum dmarc_policy, never UNSET */
	int	 sp;		/* UNSET: as p (RFC 7489 6.3) */
	int	 np;		/* DMARCbis draft; UNSET: as sp; parsed only */
	int	 pct;		/* 0..100, default 100 */
	char	 adkim;		/* 'r' or 's' (default r) */
	char	 aspf;
	unsigned long ri;	/* report interval, default 86400 */
	char	 fo[32];	/* default "0" */
	char	 rf[64];	/* default "afrf" */
	char	 rua[DMARC_URI_MAX];	/* as published; may be empty */
	char	 ruf[DMARC_URI_MAX];
	int	 p_fallback;	/* p= missing or bad, or sp= bad, and a valid
				   rua: taken as p=none (6.6.3 step 6) */
};

/*
 * Parse one TXT record.  1: a DMARC record to apply; 0: not a DMARC
 * record at all (does not begin with v=DMARC1, 6.6.3 step 2); -1: a
 * DMARC record that cannot be applied (no valid p= and no valid rua,
 * 6.6.3 step 6), with *why.  Unknown tags are ignored (6.3); a known tag
 * with a bad value other than p= and sp= takes its default.
 */
int	 dmarc_record_parse(const char *txt, struct dmarc_record *,
	    const char **why);
/* Does the record begin with v=DMARC1 (6.6.3 step 2)? */
int	 dmarc_record_is_dmarc(const char *txt);

/* ---- the author domain (RFC 7489 6.6.1) ---- */

#define DMARC_FROM_DOMAINS	8	/* distinct From: domains evaluated */
#define DMARC_FROM_FIELD_MAX	8192	/* a From: field, unfolded */

enum dmarc_from_status {
	DMARC_FROM_OK,		/* one field, 1..DMARC_FROM_DOMAINS domains */
	DMARC_FROM_NONE,	/* no From: field */
	DMARC_FROM_MULTIPLE,	/* several From: fields */
	DMARC_FROM_BAD		/* unparsable, empty, a group, an address
				   literal, too many domains */
};

struct dmarc_from {
	int	 status;
	int	 fields;	/* From: fields seen */
	int	 ndomains;
	char	 domain[DMARC_FROM_DOMAINS][256];	/* A-labels, lower */
	const char *why;	/* DMARC_FROM_BAD: what was wrong */
	/* the streaming state */
	int	 infrom;	/* the field being read is From: */
	int	 done;
	size_t	 flen;
	char	 field[DMARC_FROM_FIELD_MAX];
};

void	 dmarc_from_init(struct dmarc_from *);
/* One header line as received, without its CRLF (folded lines too). */
void	 dmarc_from_line(struct dmarc_from *, const char *line, size_t len);
/* The header has ended: the status (also in ->status). */
int	 dmarc_from_end(struct dmarc_from *);
/* A whole header (CRLF or LF line ends; stops at the empty line). */
int	 dmarc_from_header(struct dmarc_from *, const char *hdr, size_t len);
/* The body of one From: field (after the colon): 0, or -1 with *why. */
int	 dmarc_from_parse(struct dmarc_from *, const char *v, size_t len);
const char *dmarc_from_status_name(int);

/* ---- organizational domain (RFC 7489 3.2) ---- */

/* Load the public suffix list (NULL: libpsl's newest, the publicsuffix
   package's); before a seccomp filter.  0 or -1. */
int	 dmarc_init(const char *psl_file);
/* The organizational domain of an A-label domain (the domain itself when
   it is a public suffix or the list is not loaded). */
void	 dmarc_org_domain(const char *domain, char *out, size_t cap);
/* Identifier alignment (3.1.1, 3.1.2): mode 's' exact, 'r' same
   organizational domain.  Case-insensitive. */
int	 dmarc_aligned(const char *from_domain, const char *auth_domain,
	    char mode);

/* ---- policy discovery (RFC 7489 6.6.3) ---- */

#define DMARC_TXT_MAX	8
enum { DMARC_DNS_OK, DMARC_DNS_NONE, DMARC_DNS_TEMP };

struct dmarc_txt {
	int	 n;
	char	*rec[DMARC_TXT_MAX];	/* malloc'd, joined strings */
};
/* TXT records of name: DMARC_DNS_OK (n >= 1), _NONE (NXDOMAIN, no data),
   _TEMP (a failure for now). */
typedef int (*dmarc_txt_fn)(void *arg, const char *name, struct dmarc_txt *);
void	 dmarc_txt_free(struct dmarc_txt *);
/* Fill t from n NUL-ended records one after another in p (as
   dns/spfdns.c's spfdns_txt gives them); at most DMARC_TXT_MAX. */
void	 dmarc_txt_take(struct dmarc_txt *t, const char *p, size_t n);

enum dmarc_found { DMARC_FOUND_NONE, DMARC_FOUND_RECORD, DMARC_FOUND_TEMP };

struct dmarc_policy_found {
	int	 found;		/* enum dmarc_found */
	int	 at_org;	/* the record came from the org domain */
	char	 domain[256];	/* where it was published */
	char	 org[256];	/* the From domain's organizational domain */
	struct dmarc_record rec;
	const char *why;	/* FOUND_NONE: why nothing applies */
};

void	 dmarc_discover(dmarc_txt_fn, void *, const char *from_domain,
	    struct dmarc_policy_found *);

/* ---- evaluation (RFC 7489 6.6.2, 6.6.4) ---- */

#define DMARC_DKIM_MAX	8

struct dmarc_dkim {
	char	 d[256];	/* the signature's d= */
	int	 pass;		/* it verified */
};

struct dmarc_auth {
	enum spf_result	 spf;
	char		 spf_domain[256];	/* the SPF identity's domain */
	int		 ndkim;
	struct dmarc_dkim dkim[DMARC_DKIM_MAX];
};

struct dmarc_verdict {
	enum dmarc_result result;
	int	 disposition;	/* enum dmarc_policy: what to do, after pct */
	int	 policy;	/* the policy published for the domain (p or sp) */
	int	 sampled_out;	/* pct spared the message the full policy */
	int	 spf_aligned, dkim_aligned;
	char	 from_domain[256];	/* the domain that decided */
	char	 policy_domain[256];	/* where the record was */
	char	 dkim_domain[256];	/* the aligned (or first) d= */
	const char *reason;	/* a short text for logs and replies */
	struct dmarc_record rec;
	int	 has_rec;
};

/*
 * Evaluate one author domain against its discovered policy, SPF and DKIM
 * results.  draw is a number in 0..99 (random; tests choose it): the
 * policy applies when draw < pct.
 */
void	 dmarc_evaluate_domain(const char *from_domain,
	    const struct dmarc_policy_found *, const struct dmarc_auth *,
	    unsigned draw, struct dmarc_verdict *);
/*
 * The whole message: the From: status (none, several fields, unparsable:
 * permerror, disposition reject, never a silent pass), then each domain
 * (several From: domains: the strictest failing one decides, 6.6.1).
 * found[i] belongs to from->domain[i].
 */
void	 dmarc_evaluate(const struct dmarc_from *,
	    const struct dmarc_policy_found *found, const struct dmarc_auth *,
	    unsigned draw, struct dmarc_verdict *);

const char *dmarc_result_name(enum dmarc_result);
const char *dmarc_policy_name(int);
/* The "dmarc=... header.from=..." part of Authentication-Results. */
void	 dmarc_ar_part(struct buf *, const struct dmarc_verdict *);

/* ---- the evaluation store (queue/dmarcstore.c; docs/ARCHITECTURE.md) ---- */

/* Record tags of one stored evaluation (lib/rec.c encoding). */
enum dmarc_store_tag {
	DS_TIME = 1,	/* u64, seconds since the epoch */
	DS_IP,		/* the client's address */
	DS_FROM,	/* the From: domain that decided ("" if none) */
	DS_MAILFROM,	/* MAIL FROM's domain ("" for <>) */
	DS_SPF,		/* SPF result name */
	DS_SPF_DOMAIN,	/* the SPF identity's domain */
	DS_DKIM,	/* one per signature: "d=DOMAIN result" */
	DS_POLICY_DOMAIN, /* where the record was published */
	DS_P,		/* published policy applied to the domain (p or sp) */
	DS_PCT,		/* u64 */
	DS_ADKIM,	/* "r" or "s" */
	DS_ASPF,
	DS_RESULT,	/* dmarc result name */
	DS_DISPOSITION,	/* what was done: none, quarantine, reject */
	DS_SPF_ALIGNED,	/* u64 0/1 */
	DS_DKIM_ALIGNED,
	DS_OVERRIDE,	/* "", "local_policy" (monitor), "sampled_out" */
	DS_RUA,		/* the record's rua= */
	DS_REASON,
	DS_SP,		/* sp= as published ("" if absent) */
	DS__MAX
};

/* Encode one evaluation; disposition is what was done. */
void	 dmarc_store_encode(struct buf *, uint64_t when, const char *ip,
	    const char *mailfrom_domain, const struct dmarc_auth *,
	    const struct dmarc_verdict *, int disposition,
	    const char *override);
/* Is this a well-formed evaluation (every record known, bounded, the
   mandatory ones there)?  0 or -1. */
int	 dmarc_store_check(const void *, size_t);

#endif
