package inspect

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// GroupListOpts pages GroupsPage.
type GroupListOpts struct {
	// Limit is the most groups a page holds: 0 means 100, at most 1000.
	Limit int
	// Cursor is the Next of the previous page; "" for the first.
	Cursor string
}

// GroupPage is one page of GroupsPage.
type GroupPage struct {
	Groups []GroupInfo `json:"groups"`
	// Next is the cursor of the next page; "" on the last.
	Next string `json:"next,omitempty"`
}

// GroupsPage lists a page of the groups homed in queue ("" for every
// queue), newest first (then by home queue and id), with a cursor for the
// next page: a page costs one read of each queue's index of groups bounded
// by the limit (plus the groups created in the same millisecond as the
// cursor's) and one pipeline of reads for the groups it holds, however many
// groups the queues keep. A group that expired while indexed is left out
// of its page (and dropped from the index), so a page may hold fewer than
// Limit groups before the last one; a group created after the first page
// was read shows on a new first page.
func (i *Inspector) GroupsPage(ctx context.Context, queue string, opts GroupListOpts) (GroupPage, error) {
	limit := opts.Limit
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > 1000:
		return GroupPage{}, fmt.Errorf("inspect: GroupListOpts.Limit %d: want 1 to 1000 (0 for 100)", limit)
	}
	var at *store.GroupIndexEntry
	if opts.Cursor != "" {
		e, err := parseGroupCursor(opts.Cursor)
		if err != nil {
			return GroupPage{}, err
		}
		at = &e
	}
	names := []string{queue}
	if queue == "" {
		var err error
		if names, err = store.QueueNames(ctx, i.rdb); err != nil {
			return GroupPage{}, err
		}
	} else if err := keys.ValidateName("queue", queue); err != nil {
		return GroupPage{}, err
	}
	qs := make([]keys.Queue, len(names))
	for j, n := range names {
		qs[j] = keys.ForQueue(n)
	}
	per, err := store.GroupIndexAfter(ctx, i.rdb, qs, at, limit+1)
	if err != nil {
		return GroupPage{}, err
	}
	var all []store.GroupIndexEntry
	for _, es := range per {
		all = append(all, es...)
	}
	slices.SortFunc(all, func(a, b store.GroupIndexEntry) int {
		if a.Score != b.Score {
			return cmpInt(b.Score, a.Score)
		}
		if c := strings.Compare(b.Home, a.Home); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	var page GroupPage
	if len(all) > limit {
		all = all[:limit]
		last := all[limit-1]
		page.Next = strconv.FormatInt(last.Score, 10) + ":" + last.Home + ":" + last.ID
	}
	gs, err := store.ReadGroupSummaries(ctx, i.rdb, all)
	if err != nil {
		return GroupPage{}, err
	}
	gone := map[string][]string{}
	page.Groups = make([]GroupInfo, 0, len(gs))
	for _, g := range gs {
		if g.State == "" {
			gone[g.Ref.Home.Name] = append(gone[g.Ref.Home.Name], g.Ref.ID)
			continue
		}
		st := g.State
		if st == "running" {
			st = "open"
		}
		page.Groups = append(page.Groups, GroupInfo{ID: g.Ref.String(), Home: g.Ref.Home.Name, State: st, Members: g.Members,
			Succeeded: g.Succeeded, Failed: g.Failed, Running: g.Open, Held: g.Held, Created: msTime(g.CreatedMs), Join: g.Join})
	}
	refs := make([]store.GroupRef, len(page.Groups))
	for j, g := range page.Groups {
		if refs[j], err = store.ParseGroupRef(g.ID); err != nil {
			return GroupPage{}, err
		}
	}
	if err := i.groupsWork(ctx, refs, func(j int, done, total int64, bad string) {
		page.Groups[j].WorkDone, page.Groups[j].WorkTotal, page.Groups[j].WorkError = done, total, bad
	}); err != nil {
		return GroupPage{}, err
	}
	for n, ids := range gone {
		if err := store.PruneGroups(ctx, i.rdb, keys.ForQueue(n), ids); err != nil {
			return GroupPage{}, err
		}
	}
	return page, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// parseGroupCursor reads a GroupPage.Next: "<ms>:<home queue>:<id>"; an
// error wraps ErrBadCursor.
func parseGroupCursor(c string) (store.GroupIndexEntry, error) {
	bad := fmt.Errorf("%w: group cursor %q: not one GroupsPage gave", ErrBadCursor, c)
	ms, rest, ok := strings.Cut(c, ":")
	if !ok {
		return store.GroupIndexEntry{}, bad
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return store.GroupIndexEntry{}, bad
	}
	home, id, ok := strings.Cut(rest, ":")
	if !ok || id == "" || keys.ValidateName("queue", home) != nil {
		return store.GroupIndexEntry{}, bad
	}
	return store.GroupIndexEntry{Home: home, ID: id, Score: n}, nil
}
