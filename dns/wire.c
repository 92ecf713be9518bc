/*
 * wire: the DNS message format for the stub resolver in dns.c: query
 * names, query encoding and the response parser.  No I/O and no state,
 * so the unit tests and the fuzz target drive it directly; it runs in
 * whichever process resolves.
 *
 * A response is untrusted input: every length is checked against the
 * packet, compression pointers must point strictly before the name
 * segment that holds them (so they cannot loop), and a response must
 * echo our id and question before anything in it is believed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "dns/dns.h"
#include "lib/util.h"

#define HDRLEN		12
#define MAXNAME		253	/* text form, without the trailing dot */
#define MAXWIRE		255	/* wire form, with the root label */
#define MAXLABEL	63
#define MAXHOPS		64	/* compression pointers followed in one name */
#define MAXCHAIN	8	/* CNAMEs followed in one answer */
#define POS_TTL_MAX	86400
#define NEG_TTL_MAX	10800
#define NEG_TTL_DEFAULT	300
#define OPT_PAYLOAD	1232
#define OPT_LEN		11	/* the OPT record dns_encode_query appends */

#define T_CNAME		5
#define T_SOA		6
#define T_OPT		41
#define C_IN		1

#define F_QR		0x8000
#define F_TC		0x0200
#define F_RD		0x0100

#define RC_NOERROR	0
#define RC_FORMERR	1
#define RC_SERVFAIL	2
#define RC_NXDOMAIN	3
#define RC_NOTIMP	4
#define RC_REFUSED	5

/* name_read() flags: what the text form of a name cannot be trusted for */
#define N_NOTHOST	0x1	/* a byte outside letters, digits, '-', '_' */
#define N_AMBIGUOUS	0x2	/* a '.' or NUL inside a label */

struct rr {
	size_t		 owner;		/* offset of the owner name */
	uint16_t	 type;
	uint16_t	 class;
	uint32_t	 ttl;
	size_t		 rdoff;
	size_t		 rdlen;
};

struct msg {
	const unsigned char	*pkt;
	size_t			 len;
	struct rr		*an;
	size_t			 nan;
	uint32_t		 negttl;
	int			 soa;
};

static uint16_t
get16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static void
put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static int
lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

static int
host_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* A domain name given by a caller: checked and lower-cased into out. */
static int
name_normalize(const char *name, char *out, size_t outlen)
{
	size_t len = strlen(name), label = 0;

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > MAXNAME || len >= outlen)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c == '.') {
			if (label == 0)
				return -1;
			label = 0;
		} else if (!host_char(c) || ++label > MAXLABEL)
			return -1;
		out[i] = (char)lower(c);
	}
	if (label == 0)
		return -1;
	out[len] = '\0';
	return 0;
}

static const char hexdig[] = "0123456789abcdef";

static int
ptr_name(const char *name, char *out, size_t outlen)
{
	unsigned char a[16];
	struct buf b;
	int n;

	if (inet_pton(AF_INET, name, a) == 1)
		n = 4;
	else if (strchr(name, ':') != NULL && inet_pton(AF_INET6, name, a) == 1)
		n = 16;
	else
		return name_normalize(name, out, outlen);
	buf_init(&b);
	for (int i = n - 1; i >= 0; i--) {
		if (n == 4)
			buf_printf(&b, "%u.", a[i]);
		else
			buf_printf(&b, "%c.%c.", hexdig[a[i] & 0xf],
			    hexdig[a[i] >> 4]);
	}
	buf_puts(&b, n == 4 ? "in-addr.arpa" : "ip6.arpa");
	n = b.len < outlen ? 0 : -1;
	if (n == 0)
		memcpy(out, b.data, b.len + 1);
	buf_free(&b);
	return n;
}

int
dns_query_name(const char *name, enum dns_type type, char *out, size_t outlen)
{
	if (name == NULL || out == NULL)
		return -1;
	if (type == DNS_PTR)
		return ptr_name(name, out, outlen);
	return name_normalize(name, out, outlen);
}

static int
type_known(enum dns_type type)
{
	return type == DNS_A || type == DNS_AAAA || type == DNS_MX ||
	    type == DNS_TXT || type == DNS_PTR;
}

/*
 * dns_encode_query's packet ends with an 11-byte EDNS0 OPT record
 * (payload 1232); a caller retrying without EDNS drops those bytes and
 * zeroes ARCOUNT (bytes 10-11).
 */
int
dns_encode_query(uint16_t id, const char *name, enum dns_type type,
    unsigned char *out, size_t outlen, size_t *len)
{
	char qname[MAXNAME + 1];
	size_t need, o = HDRLEN;
	const char *p, *dot;

	if (!type_known(type) || dns_query_name(name, type, qname,
	    sizeof(qname)) == -1)
		return -1;
	/* header, labels + root, qtype + qclass, OPT */
	need = HDRLEN + strlen(qname) + 2 + 4 + OPT_LEN;
	if (outlen < need)
		return -1;
	memset(out, 0, need);
	put16(out, id);
	put16(out + 2, F_RD);
	put16(out + 4, 1);
	put16(out + 10, 1);
	for (p = qname; *p; p = *dot ? dot + 1 : dot) {
		if ((dot = strchr(p, '.')) == NULL)
			dot = p + strlen(p);
		out[o++] = (unsigned char)(dot - p);
		memcpy(out + o, p, (size_t)(dot - p));
		o += (size_t)(dot - p);
	}
	out[o++] = 0;
	put16(out + o, (uint16_t)type);
	put16(out + o + 2, C_IN);
	o += 4;
	out[o++] = 0;			/* OPT: root owner */
	put16(out + o, T_OPT);
	put16(out + o + 2, OPT_PAYLOAD);
	o += 8;				/* class, then ttl 0 = version 0, no DO */
	put16(out + o, 0);		/* rdlength */
	o += 2;
	*len = o;
	return 0;
}

/*
 * Read the name at off into out (at least MAXNAME + 1 bytes): lower-case,
 * labels joined by '.', the root as "".  *next is where the name ends in
 * place (after the first pointer, if any).  Every pointer must point
 * before the segment it ends, so the walk only moves backwards and
 * stops.  *flags says whether the text is a host name (N_NOTHOST) and
 * whether it is even unambiguous (N_AMBIGUOUS).
 */
static int
name_read(const unsigned char *pkt, size_t len, size_t off, size_t *next,
    char *out, int *flags)
{
	size_t pos = off, seg = off, wire = 0, o = 0;
	int hops = 0, jumped = 0;

	*flags = 0;
	for (;;) {
		unsigned c;

		if (pos >= len)
			return -1;
		c = pkt[pos];
		if ((c & 0xc0) == 0xc0) {
			size_t ptr;

			if (pos + 1 >= len || ++hops > MAXHOPS)
				return -1;
			ptr = (size_t)(c & 0x3f) << 8 | pkt[pos + 1];
			if (ptr < HDRLEN || ptr >= seg)
				return -1;
			if (!jumped)
				*next = pos + 2;
			jumped = 1;
			pos = seg = ptr;
			continue;
		}
		if (c & 0xc0)
			return -1;		/* extended label types */
		if (c == 0)
			break;
		if (pos + 1 + c > len || (wire += 1 + c) + 1 > MAXWIRE)
			return -1;
		if (o > 0)
			out[o++] = '.';
		for (size_t i = 0; i < c; i++) {
			unsigned char b = pkt[pos + 1 + i];

			if (b == '.' || b == '\0')
				*flags |= N_AMBIGUOUS;
			if (!host_char(b))
				*flags |= N_NOTHOST;
			out[o++] = (char)lower(b);
		}
		pos += 1 + c;
	}
	out[o] = '\0';
	if (!jumped)
		*next = pos + 1;
	return 0;
}

/* Is the name at off the text name (already lower-case)? */
static int
name_is(const struct msg *m, size_t off, const char *name)
{
	char tmp[MAXNAME + 1];
	size_t next;
	int flags;

	if (name_read(m->pkt, m->len, off, &next, tmp, &flags) == -1 ||
	    (flags & N_AMBIGUOUS))
		return 0;
	return strcmp(tmp, name) == 0;
}

/* Read one resource record at *off and step past it. */
static int
rr_read(const struct msg *m, size_t *off, struct rr *rr)
{
	char tmp[MAXNAME + 1];
	size_t p;
	int flags;

	rr->owner = *off;
	if (name_read(m->pkt, m->len, *off, &p, tmp, &flags) == -1 ||
	    m->len - p < 10)
		return -1;
	rr->type = get16(m->pkt + p);
	rr->class = get16(m->pkt + p + 2);
	rr->ttl = get32(m->pkt + p + 4);
	if (rr->ttl & 0x80000000U)	/* RFC 2181 8: treat as zero */
		rr->ttl = 0;
	rr->rdlen = get16(m->pkt + p + 8);
	rr->rdoff = p + 10;
	if (rr->rdlen > m->len - rr->rdoff)
		return -1;
	*off = rr->rdoff + rr->rdlen;
	return 0;
}

/* A name filling the rdata from off to its end exactly. */
static int
rdata_name(const struct msg *m, const struct rr *rr, size_t off, char *out,
    int *flags)
{
	size_t next;

	if (name_read(m->pkt, rr->rdoff + rr->rdlen, off, &next, out,
	    flags) == -1)
		return -1;
	return next == rr->rdoff + rr->rdlen ? 0 : -1;
}

/* RFC 2308 5: a negative answer lives min(SOA TTL, SOA MINIMUM). */
static int
soa_read(struct msg *m, const struct rr *rr)
{
	char tmp[MAXNAME + 1];
	size_t p, end = rr->rdoff + rr->rdlen;
	uint32_t min;
	int flags;

	if (name_read(m->pkt, end, rr->rdoff, &p, tmp, &flags) == -1 ||
	    name_read(m->pkt, end, p, &p, tmp, &flags) == -1 || end - p != 20)
		return -1;
	if (m->soa)
		return 0;
	min = get32(m->pkt + p + 16);
	m->negttl = rr->ttl < min ? rr->ttl : min;
	if (m->negttl > NEG_TTL_MAX)
		m->negttl = NEG_TTL_MAX;
	m->soa = 1;
	return 0;
}

static int
sections_read(struct msg *m, size_t off, size_t an, size_t ns, size_t ar)
{
	struct rr rr;
	size_t max = (m->len - off) / 11 + 1;

	m->an = xcalloc(an < max ? an : max, sizeof(*m->an));
	for (size_t i = 0; i < an; i++) {
		if (rr_read(m, &off, &m->an[i]) == -1)
			return -1;
		m->nan++;
	}
	for (size_t i = 0; i < ns; i++) {
		if (rr_read(m, &off, &rr) == -1)
			return -1;
		if (rr.type == T_SOA && rr.class == C_IN && soa_read(m, &rr) == -1)
			return -1;
	}
	for (size_t i = 0; i < ar; i++)
		if (rr_read(m, &off, &rr) == -1)
			return -1;
	return 0;
}

/*
 * Follow CNAMEs from qname within the answer section; name ends as the
 * name the records of the type belong to.  *ttl takes the CNAMEs' TTLs.
 * -1 for a malformed CNAME, 1 for a chain too long (or looping).
 */
static int
chain_follow(const struct msg *m, enum dns_type type, char *name,
    uint32_t *ttl)
{
	for (int hop = 0;; hop++) {
		const struct rr *cname = NULL;
		int flags;

		for (size_t i = 0; i < m->nan; i++) {
			const struct rr *rr = &m->an[i];

			if (rr->class != C_IN || !name_is(m, rr->owner, name))
				continue;
			if (rr->type == type)
				return 0;
			if (rr->type == T_CNAME && cname == NULL)
				cname = rr;
		}
		if (cname == NULL)
			return 0;
		if (hop >= MAXCHAIN)
			return 1;
		/* a target we cannot write down unambiguously is refused */
		if (rdata_name(m, cname, cname->rdoff, name, &flags) == -1 ||
		    (flags & N_AMBIGUOUS))
			return -1;
		if (cname->ttl < *ttl)
			*ttl = cname->ttl;
	}
}

static int
mx_read(const struct msg *m, const struct rr *rr, struct dns_result *res)
{
	struct dns_mx *mx = &res->mx[res->nmx];
	size_t i;
	int flags;

	if (rr->rdlen < 3 || rdata_name(m, rr, rr->rdoff + 2, mx->host,
	    &flags) == -1)
		return -1;
	if (flags)
		return 0;			/* not a host we could look up */
	mx->pref = get16(m->pkt + rr->rdoff);
	/* insertion keeps records of equal preference in answer order */
	for (i = res->nmx; i > 0 && res->mx[i - 1].pref > mx->pref; i--)
		;
	if (i < res->nmx) {
		struct dns_mx tmp = *mx;

		memmove(&res->mx[i + 1], &res->mx[i],
		    (res->nmx - i) * sizeof(*mx));
		res->mx[i] = tmp;
	}
	res->nmx++;
	return 0;
}

static int
addr_read(const struct msg *m, const struct rr *rr, struct dns_result *res)
{
	struct sockaddr_storage *ss = &res->addr[res->naddr];

	memset(ss, 0, sizeof(*ss));
	if (rr->type == DNS_A) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if (rr->rdlen != 4)
			return -1;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, m->pkt + rr->rdoff, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (rr->rdlen != 16)
			return -1;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, m->pkt + rr->rdoff, 16);
	}
	res->naddr++;
	return 0;
}

/* The character-strings of one TXT record, joined. */
static int
txt_read(const struct msg *m, const struct rr *rr, struct dns_result *res)
{
	const unsigned char *p = m->pkt + rr->rdoff, *end = p + rr->rdlen;
	char *s = xmalloc(rr->rdlen + 1);
	size_t o = 0;

	while (p < end) {
		size_t n = *p++;

		if (n > (size_t)(end - p)) {
			free(s);
			return -1;
		}
		memcpy(s + o, p, n);
		o += n;
		p += n;
	}
	s[o] = '\0';
	res->txt[res->ntxt++] = s;
	return 0;
}

static int
ptr_read(const struct msg *m, const struct rr *rr, struct dns_result *res)
{
	char name[MAXNAME + 1];
	int flags;

	if (rdata_name(m, rr, rr->rdoff, name, &flags) == -1)
		return -1;
	if (flags || name[0] == '\0')
		return 0;
	res->txt[res->ntxt++] = xstrdup(name);
	return 0;
}

/* The records of the type owned by name, decoded into res. */
static int
answers_read(const struct msg *m, enum dns_type type, const char *name,
    struct dns_result *res)
{
	size_t n = 0;
	int r = 0;

	for (size_t i = 0; i < m->nan; i++)
		if (m->an[i].type == type && m->an[i].class == C_IN &&
		    name_is(m, m->an[i].owner, name))
			n++;
	if (n == 0)
		return 0;
	if (type == DNS_MX)
		res->mx = xcalloc(n, sizeof(*res->mx));
	else if (type == DNS_A || type == DNS_AAAA)
		res->addr = xcalloc(n, sizeof(*res->addr));
	else
		res->txt = xcalloc(n, sizeof(*res->txt));
	for (size_t i = 0; i < m->nan && r == 0; i++) {
		const struct rr *rr = &m->an[i];

		if (rr->type != type || rr->class != C_IN ||
		    !name_is(m, rr->owner, name))
			continue;
		if (rr->ttl < res->ttl)
			res->ttl = rr->ttl;
		switch (type) {
		case DNS_MX:
			r = mx_read(m, rr, res);
			break;
		case DNS_A:
		case DNS_AAAA:
			r = addr_read(m, rr, res);
			break;
		case DNS_TXT:
			r = txt_read(m, rr, res);
			break;
		case DNS_PTR:
			r = ptr_read(m, rr, res);
			break;
		}
	}
	return r;
}

static const char *
rcode_why(unsigned rcode)
{
	switch (rcode) {
	case RC_FORMERR:
		return "formerr";
	case RC_SERVFAIL:
		return "servfail";
	case RC_NOTIMP:
		return "notimp";
	case RC_REFUSED:
		return "refused";
	default:
		return "bad rcode";
	}
}

/* The header and the echoed question: is this an answer to us? */
static int
question_check(const struct msg *m, uint16_t id, const char *qname,
    enum dns_type type, size_t *off)
{
	uint16_t flags = get16(m->pkt + 2);
	unsigned rcode = flags & 0xf, qd = get16(m->pkt + 4);
	char name[MAXNAME + 1];
	int nflags;

	if (get16(m->pkt) != id || !(flags & F_QR) || (flags >> 11 & 0xf) != 0)
		return -1;
	*off = HDRLEN;
	if (qd == 0 && rcode == RC_FORMERR)
		return 0;		/* some servers echo nothing they hate */
	if (qd != 1 || name_read(m->pkt, m->len, HDRLEN, off, name,
	    &nflags) == -1 || (nflags & N_AMBIGUOUS) || strcmp(name, qname) ||
	    m->len - *off < 4 || get16(m->pkt + *off) != type ||
	    get16(m->pkt + *off + 2) != C_IN)
		return -1;
	*off += 4;
	return 0;
}

static int
response_read(struct msg *m, uint16_t id, const char *qname,
    enum dns_type type, struct dns_result *res, int *truncated)
{
	char name[MAXNAME + 1];
	unsigned rcode;
	size_t off;
	int r;

	if (m->len < HDRLEN || question_check(m, id, qname, type, &off) == -1)
		return -1;
	rcode = get16(m->pkt + 2) & 0xf;
	if (get16(m->pkt + 2) & F_TC) {
		*truncated = 1;
		res->why = "truncated";
		return 0;
	}
	if (rcode != RC_NOERROR && rcode != RC_NXDOMAIN) {
		res->why = rcode_why(rcode);
		return 0;
	}
	if (sections_read(m, off, get16(m->pkt + 6), get16(m->pkt + 8),
	    get16(m->pkt + 10)) == -1)
		return -1;
	memcpy(name, qname, strlen(qname) + 1);
	res->ttl = UINT32_MAX;
	if ((r = chain_follow(m, type, name, &res->ttl)) != 0) {
		res->ttl = 0;
		res->why = "cname chain too long";
		return r;
	}
	if (rcode == RC_NOERROR && answers_read(m, type, name, res) == -1)
		return -1;
	if (res->nmx + res->naddr + res->ntxt > 0) {
		res->status = DNS_OK;
		res->why = "ok";
		if (res->ttl > POS_TTL_MAX)
			res->ttl = POS_TTL_MAX;
		return 0;
	}
	res->status = rcode == RC_NXDOMAIN ? DNS_NXDOMAIN : DNS_NODATA;
	res->why = rcode == RC_NXDOMAIN ? "nxdomain" : "nodata";
	res->ttl = m->soa ? m->negttl : NEG_TTL_DEFAULT;
	return 0;
}

int
dns_parse_response(const unsigned char *pkt, size_t len, uint16_t id,
    const char *name, enum dns_type type, struct dns_result *res,
    int *truncated)
{
	char qname[MAXNAME + 1];
	struct msg m;
	int tc = 0, r;

	memset(res, 0, sizeof(*res));
	res->status = DNS_TEMPFAIL;
	res->why = "malformed response";
	if (truncated)
		*truncated = 0;
	if (pkt == NULL || !type_known(type) ||
	    dns_query_name(name, type, qname, sizeof(qname)) == -1)
		return -1;
	memset(&m, 0, sizeof(m));
	m.pkt = pkt;
	m.len = len;
	r = response_read(&m, id, qname, type, res, &tc);
	free(m.an);
	if (r == -1) {
		dns_result_free(res);
		res->status = DNS_TEMPFAIL;
		res->why = "malformed response";
		return -1;
	}
	if (truncated)
		*truncated = tc;
	return 0;
}

void
dns_result_free(struct dns_result *res)
{
	if (res == NULL)
		return;
	for (size_t i = 0; i < res->ntxt; i++)
		free(res->txt[i]);
	free(res->txt);
	free(res->mx);
	free(res->addr);
	res->txt = NULL;
	res->mx = NULL;
	res->addr = NULL;
	res->ntxt = res->nmx = res->naddr = 0;
}

void
dns_result_copy(struct dns_result *dst, const struct dns_result *src)
{
	*dst = *src;
	dst->mx = NULL;
	dst->addr = NULL;
	dst->txt = NULL;
	if (src->nmx) {
		dst->mx = xcalloc(src->nmx, sizeof(*dst->mx));
		memcpy(dst->mx, src->mx, src->nmx * sizeof(*dst->mx));
	}
	if (src->naddr) {
		dst->addr = xcalloc(src->naddr, sizeof(*dst->addr));
		memcpy(dst->addr, src->addr, src->naddr * sizeof(*dst->addr));
	}
	if (src->ntxt) {
		dst->txt = xcalloc(src->ntxt, sizeof(*dst->txt));
		for (size_t i = 0; i < src->ntxt; i++)
			dst->txt[i] = xstrdup(src->txt[i]);
	}
}
