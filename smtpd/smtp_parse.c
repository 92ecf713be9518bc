/*
 * smtp_parse: pure parsers for what an SMTP client sends: the command line
 * (verb and argument), the reverse- and forward-path of MAIL and RCPT
 * (RFC 5321 4.1.2, with RFC 6531 UTF-8), the ESMTP parameters after them and
 * the HELO/EHLO domain.  It runs in the unprivileged smtp process on
 * untrusted network input, so every validator here fails closed: each rule
 * rejects on its own and there is a single success exit at the end.  Nothing
 * is allocated and no I/O is done; results point into the caller's line or
 * are copied into fixed, bounds-checked buffers.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "smtpd/smtp_parse.h"
#include "lib/addr.h"
#include "lib/drop.h"
#include "lib/util.h"

_Static_assert(SMTP_PROGRAM_MAX == DROP_PROGRAM_MAX,
    "XPROGRAM carries what a maildrop file holds");

/* Options for domain_check(). */
#define DOM_UTF8	0x01	/* U-labels (UTF-8) allowed */
#define DOM_TRAILDOT	0x02	/* one final '.' allowed (HELO) */
#define DOM_UNDERSCORE	0x04	/* '_' allowed in labels (HELO) */
#define DOM_LITERAL	0x08	/* [address-literal] allowed */

#define LABEL_MAX	63
#define PARAM_SHOW_MAX	32	/* keyword octets quoted back in *why */

/* Built by param_unsupported(); valid until the next call. */
static char	 why_buf[64];

static int
parse_fail(const char **why, const char *msg)
{
	if (why != NULL)
		*why = msg;
	return -1;
}

static int
ascii_lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* Do the first n octets of a equal b (of length n), ignoring ASCII case? */
static int
ascii_ncaseeq(const char *a, const char *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (a[i] == '\0' || b[i] == '\0')
			return 0;
		if (ascii_lower((unsigned char)a[i]) !=
		    ascii_lower((unsigned char)b[i]))
			return 0;
	}
	return 1;
}

/* Is the n-octet word w exactly kw, ignoring ASCII case? */
static int
word_eq(const char *w, size_t n, const char *kw)
{
	return strlen(kw) == n && ascii_ncaseeq(w, kw, n);
}

static int
is_alpha(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* An octet >= 0x80 at s: set *n to its UTF-8 sequence length, or fail. */
static int
scan_8bit(const char *s, size_t avail, int allow, int *utf8, size_t *n,
    const char **why)
{
	if (!allow)
		return parse_fail(why, "non-ASCII address requires SMTPUTF8");
	if ((*n = addr_utf8_seq((const unsigned char *)s, avail)) == 0)
		return parse_fail(why, "malformed UTF-8");
	*utf8 = 1;
	return 0;
}

/* ---- domains and address literals ---------------------------------- */

/* Copy n octets of s into a NUL-terminated dst of size dsize, or fail. */
static int
span_copy(char *dst, size_t dsize, const char *s, size_t n)
{
	if (n >= dsize)
		return -1;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/*
 * "[" IPv4 "]" or "[IPv6:" IPv6 "]".  General-address-literals (any other
 * Standardized-tag) are rejected: nothing can route to them.
 */
static int
literal_check(const char *s, size_t len, const char **why)
{
	unsigned char addr[16];
	char tmp[64];

	if (len < 3 || s[0] != '[' || s[len - 1] != ']')
		return parse_fail(why, "malformed address literal");
	if (span_copy(tmp, sizeof(tmp), s + 1, len - 2) == -1)
		return parse_fail(why, "malformed address literal");
	if (ascii_ncaseeq(tmp, "IPv6:", 5)) {
		if (inet_pton(AF_INET6, tmp + 5, addr) != 1)
			return parse_fail(why, "malformed IPv6 address literal");
	} else if (strchr(tmp, ':') != NULL) {
		return parse_fail(why, "unsupported address literal");
	} else if (inet_pton(AF_INET, tmp, addr) != 1)
		return parse_fail(why, "malformed IPv4 address literal");
	return 0;
}

/* One label character at s; *n is set to how many octets it takes. */
static int
label_char(const char *s, size_t avail, int opts, int *utf8, size_t *n,
    const char **why)
{
	unsigned char c = (unsigned char)*s;

	*n = 1;
	if (c >= 0x80)
		return scan_8bit(s, avail, opts & DOM_UTF8, utf8, n, why);
	if (c == '_' && !(opts & DOM_UNDERSCORE))
		return parse_fail(why, "malformed domain");
	if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_')
		return parse_fail(why, "malformed domain");
	return 0;
}

/* The label at s (up to '.' or len); *n is set to its length. */
static int
label_check(const char *s, size_t len, int opts, int *utf8, size_t *n,
    const char **why)
{
	size_t i = 0, step;

	while (i < len && s[i] != '.') {
		if (label_char(s + i, len - i, opts, utf8, &step, why) == -1)
			return -1;
		i += step;
	}
	*n = i;
	if (i == 0)
		return parse_fail(why, "malformed domain");
	if (i > LABEL_MAX)
		return parse_fail(why, "domain label too long");
	if (s[0] == '-' || s[i - 1] == '-')
		return parse_fail(why, "malformed domain");
	return 0;
}

static int
labels_check(const char *s, size_t len, int opts, int *utf8,
    const char **why)
{
	size_t i = 0, n;

	for (;;) {
		if (label_check(s + i, len - i, opts, utf8, &n, why) == -1)
			return -1;
		i += n;
		if (i == len)
			break;
		i++;		/* the '.'; an empty label after it fails */
	}
	return 0;
}

/* Is the len octets at s a Domain (or address-literal, per opts)? */
static int
domain_check(const char *s, size_t len, int opts, int *utf8,
    const char **why)
{
	int r;

	if (len == 0)
		return parse_fail(why, "missing domain");
	if (len > SMTP_DOMAIN_MAX)
		return parse_fail(why, "domain too long");
	if (s[0] == '[' && !(opts & DOM_LITERAL))
		return parse_fail(why, "malformed domain");
	if ((opts & DOM_TRAILDOT) && len > 1 && s[len - 1] == '.' &&
	    s[0] != '[')
		len--;
	if (s[0] == '[')
		r = literal_check(s, len, why);
	else
		r = labels_check(s, len, opts, utf8, why);
	if (r == -1)
		return -1;
	return 0;
}

/* ---- paths ------------------------------------------------------------ */

static int
path_utf8_opts(int flags)
{
	return (flags & PATH_ALLOW_UTF8) ? DOM_UTF8 : 0;
}

/* Missing '>' and a bad character are told apart for the client. */
static int
path_malformed(const char *p, const char **why)
{
	if (*p == '\0')
		return parse_fail(why, "address must be enclosed in <>");
	return parse_fail(why, "malformed address");
}

/* Source route "@a,@b:" at *p: validate, then step over it. */
static int
path_route(const char **p, int flags, const char **why)
{
	const char *s = *p;
	size_t n;
	int utf8 = 0;

	for (;;) {
		s++;		/* the '@' */
		n = strcspn(s, ",:>");
		if (domain_check(s, n, path_utf8_opts(flags), &utf8, why) == -1)
			return -1;
		s += n;
		if (*s == ':')
			break;
		if (*s != ',' || s[1] != '@')
			return path_malformed(s, why);
		s++;
	}
	*p = s + 1;
	return 0;
}

/* Dot-string: atoms of atext separated by single dots. */
static int
local_dotstring(const char *s, int flags, int *utf8, size_t *len,
    const char **why)
{
	size_t i = 0, atom, n;

	for (;;) {
		for (atom = 0; ; atom += n, i += n) {
			n = 1;
			if ((unsigned char)s[i] >= 0x80) {
				if (scan_8bit(s + i, SIZE_MAX,
				    flags & PATH_ALLOW_UTF8, utf8, &n, why) == -1)
					return -1;
			} else if (!addr_is_atext((unsigned char)s[i]))
				break;
		}
		if (atom == 0)
			return path_malformed(s + i, why);
		if (s[i] != '.')
			break;
		i++;
	}
	*len = i;
	return 0;
}

/* Quoted-string: qtextSMTP and quoted-pairSMTP between DQUOTEs. */
static int
local_quoted(const char *s, int flags, int *utf8, size_t *len,
    const char **why)
{
	size_t i = 1, n;
	unsigned char c;

	for (; s[i] != '"'; i += n) {
		c = (unsigned char)s[i];
		n = 1;
		if (c >= 0x80) {
			if (scan_8bit(s + i, SIZE_MAX, flags & PATH_ALLOW_UTF8,
			    utf8, &n, why) == -1)
				return -1;
		} else if (c == '\\' && s[i + 1] >= 32 && s[i + 1] <= 126)
			n = 2;
		else if (!addr_is_qtext(c))
			return path_malformed(s + i, why);
	}
	/* An empty local part names no mailbox: refuse it. */
	if (i == 1)
		return parse_fail(why, "empty local part");
	*len = i + 1;
	return 0;
}

/* Local-part at s, copied into out->local; *len is set to its length. */
static int
path_local(const char *s, int flags, struct smtp_path *out, size_t *len,
    const char **why)
{
	int r;

	if (*s == '"')
		r = local_quoted(s, flags, &out->utf8, len, why);
	else
		r = local_dotstring(s, flags, &out->utf8, len, why);
	if (r == -1)
		return -1;
	if (*len > SMTP_LOCAL_MAX)
		return parse_fail(why, "local part too long");
	if (span_copy(out->local, sizeof(out->local), s, *len) == -1)
		return parse_fail(why, "local part too long");
	return 0;
}

/* Domain after '@' at s, up to '>'; *end is set to the '>'. */
static int
path_domain(const char *s, int flags, struct smtp_path *out,
    const char **end, const char **why)
{
	const char *gt;
	size_t n;

	if ((gt = strchr(s, '>')) == NULL)
		return parse_fail(why, "address must be enclosed in <>");
	n = (size_t)(gt - s);
	if (domain_check(s, n, DOM_LITERAL | path_utf8_opts(flags),
	    &out->utf8, why) == -1)
		return -1;
	if (span_copy(out->domain, sizeof(out->domain), s, n) == -1)
		return parse_fail(why, "domain too long");
	*end = gt;
	return 0;
}

/* Mailbox (after any source route); *end is set to the closing '>'. */
static int
path_mailbox(const char *s, int flags, struct smtp_path *out,
    const char **end, const char **why)
{
	size_t n;

	if (path_local(s, flags, out, &n, why) == -1)
		return -1;
	s += n;
	if (*s != '@')
		return path_malformed(s, why);
	return path_domain(s + 1, flags, out, end, why);
}

/* "<>": only where the caller allows it (MAIL FROM). */
static int
path_null(const char *s, int flags, struct smtp_path *out,
    const char **end, const char **why)
{
	if (!(flags & PATH_ALLOW_NULL))
		return parse_fail(why, "null address not allowed here");
	out->null = 1;
	*end = s;
	return 0;
}

/* "<Postmaster>" without a domain (RFC 5321 4.5.1), case-insensitive. */
static int
path_is_postmaster(const char *s, int flags)
{
	return (flags & PATH_ALLOW_POSTMASTER) &&
	    ascii_ncaseeq(s, "Postmaster>", 11);
}

static void
path_postmaster(const char *s, struct smtp_path *out, const char **end)
{
	str_copy(out->local, "Postmaster", sizeof(out->local));
	*end = s + 10;
}

/* [source route] Mailbox; the route is checked, then dropped. */
static int
path_routed(const char *s, int flags, struct smtp_path *out,
    const char **end, const char **why)
{
	if (*s == '@' && path_route(&s, flags, why) == -1)
		return -1;
	return path_mailbox(s, flags, out, end, why);
}

/*
 * Between '<' and '>': <>, <Postmaster>, or [route] mailbox.  The special
 * forms only recognise; the caller's length and trailing checks still
 * apply to them.
 */
static int
path_inner(const char *s, int flags, struct smtp_path *out,
    const char **end, const char **why)
{
	int r = 0;

	if (*s == '>')
		r = path_null(s, flags, out, end, why);
	else if (path_is_postmaster(s, flags))
		path_postmaster(s, out, end);
	else
		r = path_routed(s, flags, out, end, why);
	if (r == -1)
		return -1;
	return 0;
}

int
smtp_parse_path(const char *s, int flags, struct smtp_path *out,
    const char **rest, const char **why)
{
	const char *end;

	memset(out, 0, sizeof(*out));
	*rest = s;
	if (*s != '<')
		return parse_fail(why, "address must be enclosed in <>");
	if (path_inner(s + 1, flags, out, &end, why) == -1)
		return -1;
	if ((size_t)(end - (s + 1)) > SMTP_PATH_MAX)
		return parse_fail(why, "address too long");
	if (end[1] != '\0' && end[1] != ' ')
		return parse_fail(why, "junk after address");
	*rest = end + 1;
	return 0;
}

/* Append src at *off in dst (size dsize), truncating; keeps NUL. */
static void
str_append(char *dst, size_t dsize, size_t *off, const char *src)
{
	if (*off >= dsize)
		return;
	*off += str_copy(dst + *off, src, dsize - *off);
	if (*off >= dsize)
		*off = dsize - 1;
}

void
smtp_path_string(const struct smtp_path *p, char *dst, size_t dsize)
{
	size_t off = 0;

	if (dsize == 0)
		return;
	dst[0] = '\0';
	if (p->null)
		return;
	str_append(dst, dsize, &off, p->local);
	if (p->domain[0] == '\0')
		return;
	str_append(dst, dsize, &off, "@");
	str_append(dst, dsize, &off, p->domain);
}

/* ---- command lines ---------------------------------------------------- */

static const struct smtp_verb_def {
	const char	*name;
	enum smtp_verb	 verb;
	int		 noarg;
} smtp_verbs[] = {
	{ "HELO",	VERB_HELO,	0 },
	{ "EHLO",	VERB_EHLO,	0 },
	{ "MAIL",	VERB_MAIL,	0 },
	{ "RCPT",	VERB_RCPT,	0 },
	{ "DATA",	VERB_DATA,	1 },
	{ "BDAT",	VERB_BDAT,	0 },
	{ "RSET",	VERB_RSET,	1 },
	{ "NOOP",	VERB_NOOP,	0 },
	{ "HELP",	VERB_HELP,	0 },
	{ "QUIT",	VERB_QUIT,	1 },
	{ "VRFY",	VERB_VRFY,	0 },
	{ "EXPN",	VERB_EXPN,	0 },
	{ "STARTTLS",	VERB_STARTTLS,	1 },
	{ "AUTH",	VERB_AUTH,	0 },
};

static const struct smtp_verb_def *
command_lookup(const char *w, size_t n)
{
	size_t i;

	for (i = 0; i < sizeof(smtp_verbs) / sizeof(smtp_verbs[0]); i++)
		if (word_eq(w, n, smtp_verbs[i].name))
			return &smtp_verbs[i];
	return NULL;
}

/* "FROM:" or "TO:" then optional spaces; arg is left at the '<'. */
static int
command_prefix(struct smtp_command *cmd, const char *prefix,
    const char *msg, const char **why)
{
	size_t n = strlen(prefix);
	const char *p = cmd->arg;

	if (!ascii_ncaseeq(p, prefix, n))
		return parse_fail(why, msg);
	for (p += n; *p == ' '; p++)
		;
	cmd->arg = p;
	return 0;
}

/* Trailing spaces are tolerated after a verb that takes no argument. */
static int
command_noarg(const char *arg)
{
	return arg[strspn(arg, " ")] == '\0';
}

static int
command_check(const struct smtp_verb_def *v, struct smtp_command *cmd,
    const char **why)
{
	static const char *const noarg_why[] = {
		[VERB_DATA] = "DATA takes no arguments",
		[VERB_RSET] = "RSET takes no arguments",
		[VERB_QUIT] = "QUIT takes no arguments",
		[VERB_STARTTLS] = "STARTTLS takes no arguments",
	};

	if (v->verb == VERB_MAIL)
		return command_prefix(cmd, "FROM:", "MAIL requires FROM:", why);
	if (v->verb == VERB_RCPT)
		return command_prefix(cmd, "TO:", "RCPT requires TO:", why);
	if (v->noarg && !command_noarg(cmd->arg))
		return parse_fail(why, noarg_why[v->verb]);
	return 0;
}

int
smtp_parse_command(const char *line, struct smtp_command *cmd,
    const char **why)
{
	const struct smtp_verb_def *v;
	size_t n = strcspn(line, " ");

	cmd->verb = VERB_UNKNOWN;
	cmd->arg = line[n] == ' ' ? line + n + 1 : line + n;
	if ((v = command_lookup(line, n)) == NULL)
		return 0;
	cmd->verb = v->verb;
	return command_check(v, cmd, why);
}

/* ---- ESMTP parameters ------------------------------------------------- */

struct esmtp_param {
	const char	*kw;
	size_t		 kwlen;
	const char	*val;	/* NULL when there is no '=' */
	size_t		 vallen;
};

/* Split the space-free token at *s into keyword and value; advance *s. */
static void
param_split(const char **s, struct esmtp_param *p)
{
	const char *t = *s;
	size_t n = strcspn(t, " ");
	const char *eq = memchr(t, '=', n);

	p->kw = t;
	p->kwlen = eq != NULL ? (size_t)(eq - t) : n;
	p->val = eq != NULL ? eq + 1 : NULL;
	p->vallen = eq != NULL ? n - p->kwlen - 1 : 0;
	*s = t + n;
}

/* "unsupported parameter FOO", the keyword made printable and short. */
static int
param_unsupported(const struct esmtp_param *p, const char **why)
{
	static const char head[] = "unsupported parameter ";
	size_t off = sizeof(head) - 1, i, n;

	n = p->kwlen < PARAM_SHOW_MAX ? p->kwlen : PARAM_SHOW_MAX;
	memcpy(why_buf, head, off);
	for (i = 0; i < n && off < sizeof(why_buf) - 1; i++) {
		unsigned char c = (unsigned char)p->kw[i];

		why_buf[off++] = (c > 32 && c < 127) ? (char)c : '?';
	}
	why_buf[off] = '\0';
	return parse_fail(why, why_buf);
}

static int
param_size(const struct esmtp_param *p, struct mail_params *mp,
    const char **why)
{
	char digits[21];
	long long v;

	if (p->val == NULL || p->vallen == 0)
		return parse_fail(why, "bad SIZE");
	if (span_copy(digits, sizeof(digits), p->val, p->vallen) == -1)
		return parse_fail(why, "bad SIZE");
	if (parse_ll(digits, 0, LLONG_MAX, &v) == -1)
		return parse_fail(why, "bad SIZE");
	mp->size = v;
	return 0;
}

static int
param_body(const struct esmtp_param *p, struct mail_params *mp,
    const char **why)
{
	if (p->val == NULL)
		return parse_fail(why, "bad BODY");
	if (word_eq(p->val, p->vallen, "7BIT"))
		mp->body = BODY_7BIT;
	else if (word_eq(p->val, p->vallen, "8BITMIME"))
		mp->body = BODY_8BITMIME;
	else if (word_eq(p->val, p->vallen, "BINARYMIME"))
		mp->body = BODY_BINARYMIME;
	else
		return parse_fail(why, "bad BODY");
	return 0;
}

static int
param_smtputf8(const struct esmtp_param *p, struct mail_params *mp,
    const char **why)
{
	if (p->val != NULL)
		return parse_fail(why, "SMTPUTF8 takes no value");
	mp->smtputf8 = 1;
	return 0;
}

/* A process name: letters, digits, ".", "_", "+", "-" (lib/drop.h). */
static int
param_program(const struct esmtp_param *p, struct mail_params *mp,
    const char **why)
{
	if (p->val == NULL || p->vallen == 0 || p->vallen > SMTP_PROGRAM_MAX ||
	    !drop_program_ok(p->val, p->vallen))
		return parse_fail(why, "bad XPROGRAM");
	memcpy(mp->program, p->val, p->vallen);
	mp->program[p->vallen] = '\0';
	return 0;
}

static int
param_ret(const struct esmtp_param *p, struct mail_params *mp,
    const char **why)
{
	/* -3: a DSN parameter's syntax, refused with 501 (RFC 3461). */
	return esmtp_ret(p->val, p->vallen, &mp->ret, why) == 0 ? 0 : -3;
}

static int
param_envid(const struct esmtp_param *p, struct mail_params *mp,
    const char **why)
{
	return esmtp_envid(p->val, p->vallen, mp->envid, sizeof(mp->envid),
	    why) == 0 ? 0 : -3;
}

static const struct mail_param_def {
	const char	*kw;
	int		(*parse)(const struct esmtp_param *,
			    struct mail_params *, const char **);
} mail_param_defs[] = {
	{ "SIZE",	param_size },
	{ "BODY",	param_body },
	{ "SMTPUTF8",	param_smtputf8 },
	{ "XPROGRAM",	param_program },
	{ "RET",	param_ret },
	{ "ENVID",	param_envid },
};

static int
param_mail_one(const struct esmtp_param *p, struct mail_params *mp,
    unsigned *seen, const char **why)
{
	size_t i;

	for (i = 0; i < sizeof(mail_param_defs) / sizeof(mail_param_defs[0]);
	    i++) {
		if (!word_eq(p->kw, p->kwlen, mail_param_defs[i].kw))
			continue;
		if (*seen & (1u << i))
			return parse_fail(why, "duplicate parameter");
		*seen |= 1u << i;
		return mail_param_defs[i].parse(p, mp, why);
	}
	param_unsupported(p, why);
	return -2;
}

int
smtp_parse_mail_params(const char *s, struct mail_params *mp,
    const char **why)
{
	struct esmtp_param p;
	unsigned seen = 0;

	mp->size = -1;
	mp->body = BODY_7BIT;
	mp->smtputf8 = 0;
	mp->program[0] = '\0';
	mp->ret = DSN_RET_NONE;
	mp->envid[0] = '\0';
	for (;;) {
		int r;

		s += strspn(s, " ");
		if (*s == '\0')
			break;
		param_split(&s, &p);
		if ((r = param_mail_one(&p, mp, &seen, why)) != 0)
			return r;
	}
	return 0;
}

int
smtp_parse_rcpt_params(const char *s, const char **why)
{
	struct esmtp_param p;

	s += strspn(s, " ");
	if (*s != '\0') {
		param_split(&s, &p);
		return param_unsupported(&p, why);
	}
	return 0;
}

/* ---- HELO and bare domains -------------------------------------------- */

/*
 * HELO is liberal ('_' in labels, a final '.', trailing spaces) since the
 * name is only logged and never routed on; it stays ASCII.
 */
int
smtp_parse_helo(const char *s, const char **why)
{
	size_t len = strlen(s);
	int utf8 = 0;

	while (len > 0 && s[len - 1] == ' ')
		len--;
	if (len == 0)
		return parse_fail(why, "HELO requires a domain");
	if (domain_check(s, len, DOM_TRAILDOT | DOM_UNDERSCORE | DOM_LITERAL,
	    &utf8, why) == -1)
		return -1;
	return 0;
}

int
smtp_check_domain(const char *s, int allow_utf8)
{
	int utf8 = 0;

	if (domain_check(s, strlen(s),
	    DOM_LITERAL | (allow_utf8 ? DOM_UTF8 : 0), &utf8, NULL) == -1)
		return -1;
	return 0;
}
