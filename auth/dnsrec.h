/*
 * dnsrec: the checks `ternctl dns --check` makes on the text of a
 * domain's published records: the tag=value lists of DKIM key records
 * (RFC 6376 3.2, 3.6.1; RFC 8463) and DMARC policy records (RFC 7489
 * 6.3), and the terms of an SPF record that cost DNS lookups (RFC 7208
 * 4.6.4), with the include: and redirect= targets to follow.  Pure
 * functions on strings the DNS supplied; run in ternctl and under the
 * fuzz target fuzz_dnsrec.  They judge what an admin published; they
 * are not the verifier's or the DMARC evaluator's parsers, but read the
 * tag-lists with the same code (auth/taglist.c).
 */
#ifndef TERN_DNSREC_H
#define TERN_DNSREC_H

#include <stddef.h>

struct buf;

/* A DKIM key record (the TXT value, strings joined). */
struct dnsrec_dkim {
	int	alg;		/* DKIM_ALG_* */
	int	bits;		/* of the public key */
	int	revoked;	/* p= empty */
	int	testing;	/* t=y */
	char	*p;		/* p= without blanks (malloc'd; dnsrec_dkim_free) */
};

/* 0, or -1 with *why: not a key record a verifier can use. */
int	dnsrec_dkim_parse(const char *txt, struct dnsrec_dkim *, const char **why);
void	dnsrec_dkim_free(struct dnsrec_dkim *);

/* A DMARC record (RFC 7489 6.3, 6.4). */
struct dnsrec_dmarc {
	char	p[12];		/* none, quarantine, reject */
	char	sp[12];		/* "" when absent */
	int	pct;		/* 100 when absent */
	int	nrua;		/* rua= URIs */
};

/* Does the TXT value claim to be a DMARC record (v=DMARC1 first)? */
int	dnsrec_is_dmarc(const char *txt);
int	dnsrec_dmarc_parse(const char *txt, struct dnsrec_dmarc *,
	    const char **why);

/* Does the TXT value claim to be an SPF record ("v=spf1" then space)? */
int	dnsrec_is_spf(const char *txt);

#define DNSREC_SPF_TARGETS	16

/* The lookup-costing terms of one SPF record (RFC 7208 4.6.4). */
struct dnsrec_spf {
	int	lookups;	/* include a mx ptr exists redirect= */
	char	all;		/* qualifier of "all" ('+' '-' '~' '?'), or 0 */
	int	ptr;		/* has a ptr mechanism (RFC 7208 5.5: do not) */
	int	macro_targets;	/* include:/redirect= with a macro: not followed */
	size_t	ntargets;	/* include: and redirect= targets, in order */
	char	target[DNSREC_SPF_TARGETS][256];
	int	overflow;	/* more targets than kept */
};

/* Scans a record spf_record_check accepted (does not re-check it). */
void	dnsrec_spf_scan(const char *rec, struct dnsrec_spf *);

#endif
