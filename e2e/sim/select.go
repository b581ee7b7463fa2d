package sim

import (
	"fmt"
	"maps"
	"slices"
)

// checkNew validates the id of a resource being added and that it is new.
func checkNew[T any](m map[string]*T, id, prefix, kind string) error {
	if err := checkID(id, prefix); err != nil {
		return fmt.Errorf("add %s: %w", kind, err)
	}
	if _, ok := m[id]; ok {
		return fmt.Errorf("add %s %s: already exists", kind, id)
	}
	return nil
}

// byIDs returns the resources ids names, in that order, or every resource
// sorted by id when ids is empty, as EC2's Describe actions do. A malformed
// id gets malformed's error (nil: treated as not found), a missing one
// notFound's.
func byIDs[T any](m map[string]*T, ids []string, prefix string, malformed, notFound func(string) *APIError) ([]*T, *APIError) {
	if len(ids) == 0 {
		out := make([]*T, 0, len(m))
		for _, id := range slices.Sorted(maps.Keys(m)) {
			out = append(out, m[id])
		}
		return out, nil
	}
	out := make([]*T, 0, len(ids))
	for _, id := range ids {
		if !validID(id, prefix) {
			if malformed != nil {
				return nil, malformed(id)
			}
			return nil, notFound(id)
		}
		r, ok := m[id]
		if !ok {
			return nil, notFound(id)
		}
		out = append(out, r)
	}
	return out, nil
}
