/*-------------------------------------------------------------------------
 *
 * pga_print.c
 *	  pg_anonymize: printing query results as psql's aligned format does,
 *	  as a table (columns padded, numbers right-aligned, "(N rows)") or as
 *	  one record per line ("column | value").
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_anonymize.h"

/* type OIDs whose values are right-aligned (pg_type.h is server-side) */
#define PGA_INT8OID		20
#define PGA_INT2OID		21
#define PGA_INT4OID		23
#define PGA_FLOAT4OID	700
#define PGA_FLOAT8OID	701
#define PGA_NUMERICOID	1700

/* Is the column type numeric (right-aligned)? */
static bool
pga_numeric_type(Oid type)
{
	return type == PGA_INT8OID || type == PGA_INT2OID || type == PGA_INT4OID ||
		type == PGA_FLOAT4OID || type == PGA_FLOAT8OID || type == PGA_NUMERICOID;
}

/* display width of UTF-8 text: characters, not bytes */
static int
pga_width(const char *s)
{
	int			w = 0;

	for (; *s; s++)
		if (((unsigned char) *s & 0xC0) != 0x80)
			w++;
	return w;
}

/* a value on one line: control characters become spaces */
static char *
pga_cell(const PGresult *res, int row, int col)
{
	char	   *v = strdup(PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));

	if (v == NULL)
	{
		fprintf(stderr, "%s: error: out of memory\n", progname);
		exit(PGA_EXIT_ERROR);
	}
	for (char *p = v; *p; p++)
		if ((unsigned char) *p < ' ')
			*p = ' ';
	return v;
}

/* n spaces. */
static void
pga_pad(int n)
{
	for (; n > 0; n--)
		putchar(' ');
}

/* A result as an aligned table, psql-like, with an optional title. */
void
pga_print_table(const PGresult *res, const char *title)
{
	int			ncols = PQnfields(res);
	int			nrows = PQntuples(res);
	int		   *width = calloc(ncols > 0 ? ncols : 1, sizeof(int));

	if (width == NULL)
		exit(PGA_EXIT_ERROR);
	for (int c = 0; c < ncols; c++)
	{
		width[c] = pga_width(PQfname(res, c));
		for (int r = 0; r < nrows; r++)
		{
			char	   *v = pga_cell(res, r, c);
			int			w = pga_width(v);

			if (w > width[c])
				width[c] = w;
			free(v);
		}
	}

	if (title)
		printf("%s\n", title);

	/* header, centred as psql does */
	for (int c = 0; c < ncols; c++)
	{
		const char *name = PQfname(res, c);
		int			extra = width[c] - pga_width(name);

		printf("%s", c == 0 ? " " : " | ");
		pga_pad(extra / 2);
		printf("%s", name);
		pga_pad(extra - extra / 2);
	}
	printf(" \n");
	for (int c = 0; c < ncols; c++)
	{
		printf("%s", c == 0 ? "-" : "-+-");
		for (int i = 0; i < width[c]; i++)
			putchar('-');
	}
	printf("-\n");

	for (int r = 0; r < nrows; r++)
	{
		for (int c = 0; c < ncols; c++)
		{
			char	   *v = pga_cell(res, r, c);
			int			extra = width[c] - pga_width(v);

			printf("%s", c == 0 ? " " : " | ");
			if (pga_numeric_type(PQftype(res, c)))
			{
				pga_pad(extra);
				printf("%s", v);
			}
			else
			{
				printf("%s", v);
				pga_pad(extra);
			}
			free(v);
		}
		printf(" \n");
	}
	printf("(%d %s)\n", nrows, nrows == 1 ? "row" : "rows");
	free(width);
}

/* One row of a result as "column: value" lines. */
void
pga_print_record(const PGresult *res, int row, const char *title)
{
	int			ncols = PQnfields(res);
	int			width = 0;

	for (int c = 0; c < ncols; c++)
	{
		int			w = pga_width(PQfname(res, c));

		if (w > width)
			width = w;
	}
	if (title)
		printf("%s\n", title);
	for (int c = 0; c < ncols; c++)
	{
		char	   *v = pga_cell(res, row, c);

		printf("%s", PQfname(res, c));
		pga_pad(width - pga_width(PQfname(res, c)));
		printf(" | %s\n", v);
		free(v);
	}
}
