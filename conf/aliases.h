/*
 * aliases: the sendmail-format aliases file, its compiled Berkeley DB map
 * (written only by newaliases, replaced by rename) and read-only lookups.
 */
#ifndef TERN_ALIASES_H
#define TERN_ALIASES_H

#include <stddef.h>

enum alias_kind {
	ALIAS_LOCAL,	/* a bare name: a local user or another alias */
	ALIAS_ADDRESS,	/* local@domain */
	ALIAS_PIPE,	/* |command */
	ALIAS_FILE,	/* /absolute/path */
	ALIAS_INCLUDE	/* :include:/absolute/path */
};

struct alias_target {
	enum alias_kind	 kind;
	char		*value;	/* name, address, command, or path */
};

struct alias_entry {
	char			*name;	/* lower-cased */
	struct alias_target	*targets;
	size_t			 ntargets;
	int			 line;
};

/*
 * Parse aliases text (continuation lines start with white space, '#'
 * comments, "name: target, target").  Returns 0, or -1 with
 * "file:line: message" in err for the first error.
 */
int	 aliases_parse(const char *name, const char *text, size_t len,
	    struct alias_entry **out, size_t *nout, char *err, size_t errlen);
void	 aliases_free_entries(struct alias_entry *, size_t);
void	 aliases_free_targets(struct alias_target *, size_t);

/* Parse one target list ("a, b, |cmd") as found after the colon. */
int	 aliases_parse_targets(const char *s, size_t len,
	    struct alias_target **out, size_t *nout, const char **why);

/* newaliases: parse src, write src.db atomically; 0 or -1 with err. */
int	 aliases_compile(const char *src, char *err, size_t errlen,
	    size_t *count);

struct aliases;
/* Open the compiled map read-only (path is the source; map is path.db). */
struct aliases *aliases_open(const char *src);
void	 aliases_close(struct aliases *);
/*
 * Look a lower-cased name up; reopens the map if it was replaced.
 * Returns 1 found, 0 not found, -1 map error (treat as temporary).
 */
int	 aliases_lookup(struct aliases *, const char *name,
	    struct alias_target **out, size_t *nout);

#endif
