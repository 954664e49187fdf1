/*-------------------------------------------------------------------------
 *
 * pga_ledger.c
 *	  pg_anonymize ledger export FILE and ledger import FILE: the ledger of
 *	  Done requests (anonymize.ledger_export() and ledger_import()) to and
 *	  from a file, so that it can be carried to a restored database.
 *
 * The document holds digests, kinds, dates, scopes, request ids and the
 * key's fingerprint, never an identifier.  "-" as FILE is standard output
 * or input.  An export is written next to FILE and renamed over it once
 * complete, so that a failed export never leaves half a ledger.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_anonymize.h"

/* Write text to path ("-": standard output), whole or not at all. */
static bool
pga_ledger_write(const char *path, const char *text)
{
	size_t		len = strlen(text);
	char	   *tmp;
	FILE	   *f;

	if (strcmp(path, "-") == 0)
		return fwrite(text, 1, len, stdout) == len && fputc('\n', stdout) != EOF;
	tmp = malloc(strlen(path) + 5);
	if (tmp == NULL)
		return false;
	sprintf(tmp, "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL)
	{
		pga_error("could not open file \"%s\" for writing: %s", tmp, strerror(errno));
		free(tmp);
		return false;
	}
	if (fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF || fclose(f) != 0)
	{
		pga_error("could not write file \"%s\": %s", tmp, strerror(errno));
		remove(tmp);
		free(tmp);
		return false;
	}
	if (rename(tmp, path) != 0)
	{
		pga_error("could not rename \"%s\" to \"%s\": %s", tmp, path, strerror(errno));
		remove(tmp);
		free(tmp);
		return false;
	}
	free(tmp);
	return true;
}

/* The whole of path ("-": standard input), malloc'd; NULL on error. */
static char *
pga_ledger_read(const char *path)
{
	FILE	   *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	size_t		cap = 65536;
	size_t		len = 0;
	char	   *buf;

	if (f == NULL)
	{
		pga_error("could not open file \"%s\" for reading: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(cap);
	while (buf != NULL)
	{
		size_t		n = fread(buf + len, 1, cap - len - 1, f);

		len += n;
		if (n == 0)
			break;
		if (cap - len - 1 == 0)
		{
			char	   *more = realloc(buf, cap * 2);

			if (more == NULL)
			{
				free(buf);
				buf = NULL;
				break;
			}
			buf = more;
			cap *= 2;
		}
	}
	if (buf != NULL && ferror(f))
	{
		pga_error("could not read file \"%s\": %s", path, strerror(errno));
		free(buf);
		buf = NULL;
	}
	else if (buf == NULL)
		pga_error("out of memory reading file \"%s\"", path);
	if (f != stdin)
		fclose(f);
	if (buf != NULL)
		buf[len] = '\0';
	return buf;
}

/* pg_anonymize ledger export FILE */
static int
pga_ledger_export(PGconn *conn, const char *path)
{
	PGresult   *res;
	int			rc = PGA_EXIT_OK;

	res = pga_exec(conn,
				   "SELECT d, jsonb_array_length(d::jsonb -> 'entries') "
				   "FROM anonymize.ledger_export() AS d",
				   0, NULL);
	if (res == NULL)
		return PGA_EXIT_ERROR;
	if (!pga_ledger_write(path, PQgetvalue(res, 0, 0)))
		rc = PGA_EXIT_ERROR;
	else if (strcmp(path, "-") != 0)
		printf("ledger exported: %s entries to %s\n", PQgetvalue(res, 0, 1), path);
	PQclear(res);
	return rc;
}

/* pg_anonymize ledger import FILE */
static int
pga_ledger_import(PGconn *conn, const char *path)
{
	char	   *doc = pga_ledger_read(path);
	const char *params[1];
	PGresult   *res;

	if (doc == NULL)
		return PGA_EXIT_ERROR;
	params[0] = doc;
	res = pga_exec(conn, "SELECT anonymize.ledger_import($1)", 1, params);
	free(doc);
	if (res == NULL)
		return PGA_EXIT_ERROR;
	printf("ledger imported: %s entries added; the next run checks every row against the ledger\n",
		   PQgetvalue(res, 0, 0));
	PQclear(res);
	return PGA_EXIT_OK;
}

/* pg_anonymize ledger export|import FILE */
int
pga_cmd_ledger(PGconn *conn, const char *action, const char *path)
{
	if (strcmp(action, "export") == 0)
		return pga_ledger_export(conn, path);
	return pga_ledger_import(conn, path);
}
