/*-------------------------------------------------------------------------
 *
 * anonymize_preview.c
 *	  anonymize.preview(id): the rows a request would rewrite, per target,
 *	  counted by the run's own matching code (anonymize_engine.c) with the
 *	  request alone and no row limit.  Reads only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "anonymize_citus.h"
#include "anonymize_engine.h"

PG_FUNCTION_INFO_V1(anonymize_preview);

/* The engine's callback: count a matching row. */
static void
preview_count(void *arg, Oid leaf, ItemPointer tid, const int *reqs, int nreqs)
{
	(*(int64 *) arg)++;
}

/*
 * Count what the request would rewrite in one target and put the row:
 * target, col, rows, then (1.1) undated rows, triggers, materialized views.
 */
static void
preview_target(ReturnSetInfo *rsinfo, AnonymizeRequest *req, AnonymizeTarget *t)
{
	AnonymizeMatchSet *ms;
	int64		rows = 0;
	int64		undated = 0;
	ListCell   *lc;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	int			natts = rsinfo->setDesc->natts;

	ms = anonymize_matchset_build(req, 1, t->kind, t->scope);
	if (anonymize_citus_table(t->relid))
	{
		/* the rows are on the shards: counted there */
		anonymize_citus_count(req, 1, t, &rows, &undated);
	}
	else
	{
		foreach(lc, anonymize_target_leaves(t->relid))
		{
			Relation	rel = try_table_open(lfirst_oid(lc), AccessShareLock);

			if (rel == NULL)
				continue;
			if (anonymize_leaf_may_match(ms, t, rel))
				anonymize_engine_scan(ms, t, rel, preview_count, &rows);
			table_close(rel, AccessShareLock);
		}
	}
	values[0] = ObjectIdGetDatum(t->relid);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(t->col));
	values[2] = Int64GetDatum(rows);
	values[3] = Int64GetDatum(anonymize_matchset_undated(ms) + undated);
	anonymize_matchset_free(ms);
	if (natts >= 6)
	{
		bool		isnull;

		SPI_execute_with_args("SELECT anonymize._target_triggers($1::regclass),"
							  " anonymize._target_matviews($1::regclass)",
							  1, (Oid[]) {OIDOID}, (Datum[]) {ObjectIdGetDatum(t->relid)},
							  NULL, true, 1);
		values[4] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		nulls[4] = isnull;
		values[5] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		nulls[5] = isnull;
	}
	/* 1.0's preview() has the first three columns only */
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * preview(id bigint) returns table(target regclass, col name, rows bigint,
 * undated bigint, triggers text[], materialized_views regclass[])
 */
Datum
anonymize_preview(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		id = PG_GETARG_INT64(0);
	AnonymizeRequest req;
	char	   *status;
	bool		isnull;
	int			ntargets;
	AnonymizeTarget *targets;

	InitMaterializedSRF(fcinfo, 0);

	SPI_connect();
	SPI_execute_with_args("SELECT phone, email, to_date, archive, sms_survey, raw_data,"
						  " status::text FROM anonymize.anonymize_request WHERE id = $1",
						  1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(id)},
						  NULL, true, 1);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("anonymize request %lld does not exist", (long long) id),
				 errhint("See anonymize.anonymize_request for the ids of requests.")));
	status = anonymize_spi_text(0, 7);
	if (strcmp(status, "Done") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("anonymize request %lld is Done and has nothing left to preview", (long long) id),
				 errhint("Its receipts in anonymize.request_log show what it rewrote.")));
	memset(&req, 0, sizeof(req));
	req.scope[ANONYMIZE_SCOPE_ARCHIVE] = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	req.scope[ANONYMIZE_SCOPE_SMS_SURVEY] = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	req.scope[ANONYMIZE_SCOPE_RAW_DATA] = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull));
	req.active = anonymize_request_prepare(&req, anonymize_spi_text(0, 1),
										   anonymize_spi_text(0, 2),
										   DatumGetDateADT(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)));
	if (!req.active)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the phone number or email of anonymize request %lld is not valid under the current settings",
						(long long) id)));

	SPI_execute(ANONYMIZE_TARGETS_SQL, true, 0);
	ntargets = SPI_processed;
	targets = palloc0(sizeof(AnonymizeTarget) * Max(ntargets, 1));
	for (int i = 0; i < ntargets; i++)
		anonymize_target_fill(&targets[i], i);

	for (int i = 0; i < ntargets; i++)
		if (req.scope[targets[i].scope])
			preview_target(rsinfo, &req, &targets[i]);
	SPI_finish();
	return (Datum) 0;
}
