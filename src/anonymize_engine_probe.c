/*-------------------------------------------------------------------------
 *
 * anonymize_engine_probe.c
 *	  A request that costs its own size: when a leaf of a phone target has
 *	  a btree index over anonymize.canonical_phone(col, country_code,
 *	  trunk_prefix), built with the settings in force, the engine looks up
 *	  each requested number in it instead of reading the whole table.
 *
 * This file only says whether a leaf has such an index and builds the
 * key of a lookup; the lookups are the engine's (anonymize_engine.c).  The
 * index only narrows the rows read: every row it leads to is read and
 * matched again as the sequential scan matches it, so a probe reports
 * exactly the rows the scan would.  There is no probe where it could miss
 * one: a target of emails (or phones or emails), a number column, a
 * target whose rows the ledger must also check (those are found by their
 * age, not their value), an index built with other settings, a partial
 * one, one not yet valid for the run's snapshot, or a nondeterministic
 * collation.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/transam.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "nodes/primnodes.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"

#include "anonymize_engine.h"
#include "anonymize_settings.h"

/* anonymize.canonical_phone(text, text, text), or InvalidOid before 1.1 */
static Oid
probe_function(void)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};

	return LookupFuncName(list_make2(makeString("anonymize"),
									 makeString("canonical_phone")),
						  3, argtypes, true);
}

/* Is node a non-null text constant equal to setting (NULL: empty)? */
static bool
probe_const_is(Node *node, const char *setting)
{
	Const	   *c = (Const *) node;

	if (!IsA(node, Const) || c->constisnull || c->consttype != TEXTOID)
		return false;
	return strcmp(TextDatumGetCString(c->constvalue), setting ? setting : "") == 0;
}

/*
 * Is the first key of index canonical_phone(<column idatt>, <country
 * code>, <trunk prefix>) with the settings in force?
 */
static bool
probe_expression_fits(Relation index, Oid funcid, AttrNumber idatt)
{
	List	   *exprs;
	FuncExpr   *f;
	Node	   *arg;

	if (index->rd_index->indkey.values[0] != 0)
		return false;			/* a plain column, not an expression */
	exprs = RelationGetIndexExpressions(index);
	if (exprs == NIL || !IsA(linitial(exprs), FuncExpr))
		return false;
	f = (FuncExpr *) linitial(exprs);
	if (f->funcid != funcid || list_length(f->args) != 3)
		return false;
	arg = (Node *) linitial(f->args);
	if (IsA(arg, RelabelType))
		arg = (Node *) ((RelabelType *) arg)->arg;	/* varchar: a cast */
	if (!IsA(arg, Var) || ((Var *) arg)->varattno != idatt)
		return false;
	return probe_const_is(lsecond(f->args), anonymize_country_code) &&
		probe_const_is(lthird(f->args), anonymize_trunk_prefix);
}

/*
 * May the run's snapshot use index for a lookup that misses nothing: a
 * valid btree with no predicate, a deterministic collation and an
 * equality operator, not built after the snapshot (as the planner checks
 * indcheckxmin)?
 */
static bool
probe_index_usable(Relation index)
{
	Form_pg_index ix = index->rd_index;

	if (!ix->indisvalid || !ix->indisready || !ix->indislive ||
		index->rd_rel->relam != BTREE_AM_OID ||
		!heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, NULL))
		return false;
	if (ix->indcheckxmin &&
		!TransactionIdPrecedes(HeapTupleHeaderGetXmin(index->rd_indextuple->t_data),
							   TransactionXmin))
		return false;
	if (!OidIsValid(index->rd_indcollation[0]) ||
		!get_collation_isdeterministic(index->rd_indcollation[0]))
		return false;
	return OidIsValid(get_opfamily_member(index->rd_opfamily[0], TEXTOID,
										  TEXTOID, BTEqualStrategyNumber));
}

/*
 * The index of leaf that the engine may probe for the match set ms of
 * target, opened with AccessShareLock, or NULL (then it scans).
 */
Relation
anonymize_probe_index_open(AnonymizeMatchSet *ms, AnonymizeTarget *target,
						   Relation leaf)
{
	AttrNumber	idatt;
	Oid			funcid;
	List	   *indexes;
	ListCell   *lc;

	if (target->kind != ANONYMIZE_KIND_PHONE_BIT ||
		anonymize_target_numeric(target) ||
		anonymize_matchset_ledger(ms) != NULL ||
		anonymize_matchset_size(ms) == 0 ||
		leaf->rd_rel->relkind != RELKIND_RELATION)
		return NULL;
	idatt = get_attnum(RelationGetRelid(leaf), target->col);
	funcid = probe_function();
	if (idatt == InvalidAttrNumber || !OidIsValid(funcid))
		return NULL;
	indexes = RelationGetIndexList(leaf);
	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);

		if (probe_index_usable(index) &&
			probe_expression_fits(index, funcid, idatt))
		{
			list_free(indexes);
			return index;
		}
		index_close(index, AccessShareLock);
	}
	list_free(indexes);
	return NULL;
}

/* The equality function of index's first column, text against text. */
RegProcedure
anonymize_probe_eq_proc(Relation index)
{
	return get_opcode(get_opfamily_member(index->rd_opfamily[0], TEXTOID,
										  TEXTOID, BTEqualStrategyNumber));
}

/* The scan key of a lookup of canonical form canon[0..len) in index. */
void
anonymize_probe_key(ScanKey skey, Relation index, RegProcedure eqproc,
					const char *canon, int len)
{
	ScanKeyEntryInitialize(skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], eqproc,
						   PointerGetDatum(cstring_to_text_with_len(canon, len)));
}
