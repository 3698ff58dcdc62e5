package main

// FerretDB v1.24's SQLite backend gives every collection a unique index on the expression
// _ferretdb_sjson->"_id", but the lookups by _id it pushes down to SQLite filter on
// _ferretdb_sjson->'$._id'. SQLite matches an expression index only to the same expression,
// so each of those lookups (find by _id, and the query half of every update and upsert)
// scans the whole table: writing n documents one upsert at a time takes time in n².
// A projector applying 20,000 events spent minutes in those scans.
//
// idIndexer adds the index SQLite can use, on the expression the queries use, to every
// collection table it finds. It looks at the databases whose files changed since its last
// look, a few times a second, while holding the proxy's lock when there is one, so no
// FerretDB command runs while it changes a schema. FerretDB does not know the index: it
// neither lists nor drops it, and it goes away with its table.

import (
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the driver FerretDB's SQLite backend uses
)

const idIndexEvery = 250 * time.Millisecond

type idIndexer struct {
	dir    string
	mu     *sync.Mutex // the proxy's lock, or nil when commands are not serialized
	logger *slog.Logger
	seen   map[string]time.Time // database file -> newest modification time looked at
}

func (x *idIndexer) run(stop <-chan struct{}) {
	ticker := time.NewTicker(idIndexEvery)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
			x.tick()
		}
	}
}

func (x *idIndexer) tick() {
	files, err := filepath.Glob(filepath.Join(x.dir, "*.sqlite"))
	if err != nil {
		return
	}
	var changed []string
	present := make(map[string]bool, len(files))
	for _, f := range files {
		present[f] = true
		m := modified(f)
		if m.After(x.seen[f]) {
			x.seen[f] = m
			changed = append(changed, f)
		}
	}
	for f := range x.seen {
		if !present[f] {
			delete(x.seen, f) // dropped database
		}
	}
	for _, f := range changed {
		if err := x.index(f); err != nil {
			x.logger.Debug("cannot index _id lookups", "file", f, "err", err)
			delete(x.seen, f) // look again next time
		}
	}
}

// index holds the lock for one database at a time: on a restart with data, indexing every
// table at once would hold every command up until it is done.
func (x *idIndexer) index(file string) error {
	if x.mu != nil {
		x.mu.Lock()
		defer x.mu.Unlock()
	}
	return indexIDs(file)
}

// modified is the newest modification time of a database file and its write-ahead log.
func modified(file string) time.Time {
	var newest time.Time
	for _, f := range []string{file, file + "-wal"} {
		if st, err := os.Stat(f); err == nil && st.ModTime().After(newest) {
			newest = st.ModTime()
		}
	}
	return newest
}

// indexIDs makes sure every collection table of one database has the index. The file is
// opened afresh each time: FerretDB deletes a dropped database's file, and a handle kept
// open would go on indexing the deleted one.
func indexIDs(file string) error {
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT table_name FROM _ferretdb_collections`)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil // a database FerretDB has not set up yet
		}
		return err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, t+"__caas_id_lookup", t)
		if _, err := db.Exec(q); err != nil && !strings.Contains(err.Error(), "no such table") {
			return err
		}
	}
	return nil
}
