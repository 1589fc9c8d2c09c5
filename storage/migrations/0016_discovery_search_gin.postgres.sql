-- Room discovery search (docs/usage/room_discovery.md, "PostgreSQL and
-- pg_trgm"): a short pending list for the two GIN indexes of discovery_rooms.
--
-- GIN keeps new entries in an unsorted pending list, merged into the index
-- by VACUUM or once the list outgrows gin_pending_list_limit (default 4 MB),
-- and every search reads the whole list. A crawl rewrites every row of the
-- peer it crawled (last_seen_ts), so the lists are seldom empty: at 100,000
-- rooms a full 4 MB list made a rare word's search 49 ms instead of 5 ms, and
-- the planner, which prices the list in, could leave the indexes for a plan
-- testing every room (docs/benchmarks.md, "Room discovery search"). 256 kB
-- searches as fast as no list at all (fastupdate = off) while crawls keep
-- most of the list's batching: fastupdate = off made a re-crawl of 100,000
-- rooms 3 times slower, 256 kB 1.3 times.
ALTER INDEX discovery_rooms_fts SET (gin_pending_list_limit = 256);
SELECT gin_clean_pending_list('discovery_rooms_fts'::regclass);

-- The trigram index exists only if pg_trgm did when 0014 ran.
DO $$
BEGIN
    IF to_regclass('discovery_rooms_trgm') IS NOT NULL THEN
        ALTER INDEX discovery_rooms_trgm SET (gin_pending_list_limit = 256);
        PERFORM gin_clean_pending_list('discovery_rooms_trgm'::regclass);
    END IF;
END
$$;
