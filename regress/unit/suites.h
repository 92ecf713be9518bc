/* One SUITE(name) per test_name() function; see main.c. */
SUITE(util)
SUITE(smtp_parse)
SUITE(conf)
SUITE(aliases)
SUITE(envelope)
SUITE(srs)
SUITE(dns)
SUITE(dsn)
