#!/usr/bin/env python3
# bench/perf-categories.py: sum a flat perf profile (perf report --sort symbol
# -g none) by kind of work: scan and match, heap scan, index insertion and
# update, WAL, vacuum of heap and indexes, buffers and locks.  The unnamed
# postgres addresses are static functions of a stripped binary, placed by
# the exported symbols around them.
import re,sys
cats=[
 ('scan+match (extension)', r'matchset_lookup|anon_\w+|value_key|anonymize_engine_scan|hash_bytes$|__strlen|anon_trim'),
 ('heap scan (seq)', r'heapgetpage|heap_getnextslot|ExecStoreBufferHeapTuple|slot_getsomeattrs|0x000000000030e|HeapTupleSatisfiesVisibility|heapgettup'),
 ('index insert / update', r'_bt_compare|_bt_moveright|_bt_doinsert|_bt_binsrch|btint8cmp|PageAddItem|heap_index_delete_tuples|heap_hot_search_buffer|FunctionCall2Coll|heap_update|heap_fill_tuple|heap_compute_data_size|_bt_search|_bt_findinsertloc|bttextcmp|varstr_cmp|texteq|btinsert'),
 ('WAL', r'XLog|crc32c|copy_folio_from_iter|__memmove'),
 ('vacuum heap', r'HeapTupleSatisfiesVacuum|heap_vacuum_rel|heap_page_prune|heap_prepare_freeze|PageRepairFragmentation|lazy_|heap_page_prune_opt'),
 ('vacuum index (bulkdelete)', r'0x00000000002f09|0x00000000001b9|_bt_checkpage|btbulkdelete|btvacuum|pg_qsort'),
 ('buffers/locks', r'hash_search_with_hash_value|LWLock|ReadBuffer|0x0000000000446|LockBuffer|0x000000000046b|MarkBufferDirty|PinBuffer|UnpinBuffer'),
]
tot={c:0.0 for c,_ in cats}; other=0.0; others=[]
for l in open(sys.argv[1]):
    m=re.match(r'\s+([\d.]+)%\s+\[.\]\s+(\S+)',l)
    if not m: continue
    p=float(m.group(1)); s=m.group(2)
    for c,r in cats:
        if re.search(r,s): tot[c]+=p; break
    else: other+=p; others.append((p,s))
for c,_ in cats: print(f"{tot[c]:6.1f}%  {c}")
print(f"{other:6.1f}%  other (top: {', '.join(s for p,s in sorted(others,reverse=True)[:8])})")
