package store

// Watchers returns the number of live watcher goroutines.
func (s *Store) Watchers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watchers
}
