/*-------------------------------------------------------------------------
 *
 * anonymize_xact.c
 *	  The transaction bracket of the extension's background code (see
 *	  anonymize_xact.h): begin with SPI and a snapshot, commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "anonymize_xact.h"

/* Start a transaction of its own with SPI connected and a snapshot pushed. */
void
anonymize_xact_begin(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

/* Close SPI, pop the snapshot and commit the transaction. */
void
anonymize_xact_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * In the PG_CATCH of a step whose failure does not fail the run: copy the
 * error into cxt, abort the step's transaction and log "anonymize run:
 * <what> failed: <message>" (the message only: a detail could quote a row).
 */
void
anonymize_xact_abort_and_log(MemoryContext cxt, const char *what)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	ereport(LOG,
			(errhidestmt(true),
			 errmsg("anonymize run: %s failed: %s", what, edata->message)));
	FreeErrorData(edata);
}
