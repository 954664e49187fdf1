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
