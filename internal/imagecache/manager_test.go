package imagecache

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/infera-dev/infera/internal/testutil"
)

const gibBytes = 1 << 30

func TestNewNeedsDirAndEngine(t *testing.T) {
	_, err := New(Config{})
	if err == nil || !strings.Contains(err.Error(), "Config.Dir") || !strings.Contains(err.Error(), "Config.Engine") {
		t.Fatalf("New(Config{}) = %v, want both missing fields named", err)
	}
}

// TestPullAndAdopt: a listed image the engine lacks is pulled and owned; one it already has is
// Ready but not owned; the statuses say so, in ECI's phases.
func TestPullAndAdopt(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		app := fakeImage("app:v1", "a1", 1)
		base := fakeImage("base:1", "b1", 0.5)
		h.eng.offer(app)
		h.eng.have(base)
		h.set(Cache{Name: "ai", Images: []string{"app:v1", "base:1"}, SizeGiB: 20})
		if c := h.cache("ai"); c.Phase != PhasePreparing || c.Images[0].State != StatePending {
			t.Fatalf("before Run: %+v", c)
		}
		h.run()
		defer h.stop()

		h.expectCalls("pull docker.io/library/app:v1")
		c := h.cache("ai")
		if c.Phase != PhaseReady || c.Message != "" {
			t.Errorf("phase %s %q, want Ready", c.Phase, c.Message)
		}
		a := c.Images[0]
		want := ImageStatus{
			Image: "app:v1", Ref: "docker.io/library/app:v1", State: StateReady,
			ID: "sha256:a1", Digest: app.RepoDigests[0], Size: gibBytes, Owned: true, PulledAt: t0,
		}
		if a != want {
			t.Errorf("app:\n got %+v\nwant %+v", a, want)
		}
		if b := c.Images[1]; b.State != StateReady || b.Owned || !b.PulledAt.IsZero() || b.ID != "sha256:b1" {
			t.Errorf("base (already in the engine): %+v", b)
		}
		if c.Size != app.Size+base.Size || c.OwnedSize != app.Size {
			t.Errorf("size %d owned %d", c.Size, c.OwnedSize)
		}
		if h.changes.Load() == 0 {
			t.Error("OnChange never called")
		}

		// Removed behind infera's back: pulled again on the next look (every Interval).
		h.eng.drop("app:v1")
		h.advance(time.Minute)
		h.expectCalls("pull docker.io/library/app:v1")
		if a := h.image("ai", "app:v1"); a.State != StateReady || !a.Owned || !a.PulledAt.Equal(t0.Add(time.Minute)) {
			t.Errorf("after re-pull: %+v", a)
		}
	})
}

// TestPullProgress: a pull in flight is Pulling with its bytes, the cache Creating; an image
// added to a Ready cache makes it Updating.
func TestPullProgress(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		h.eng.offer(fakeImage("app:v1", "a1", 1), fakeImage("tool:2", "t2", 1))
		gate := make(chan struct{})
		h.eng.gate["docker.io/library/app:v1"] = gate
		h.set(Cache{Name: "ai", Images: []string{"app:v1"}})
		h.run()
		defer h.stop()

		c := h.cache("ai")
		if im := c.Images[0]; im.State != StatePulling || im.Current != 5 || im.Total != 10 {
			t.Errorf("pulling: %+v", im)
		}
		if c.Phase != PhaseCreating || !strings.Contains(c.Message, "pulling app:v1") {
			t.Errorf("phase %s %q, want Creating, pulling app:v1", c.Phase, c.Message)
		}
		if _, ok := h.m.Cached("app:v1"); ok {
			t.Error("Cached while pulling")
		}
		close(gate)
		synctest.Wait()
		if c := h.cache("ai"); c.Phase != PhaseReady {
			t.Fatalf("after the pull: %+v", c)
		}

		gate2 := make(chan struct{})
		h.eng.mu.Lock()
		h.eng.gate["docker.io/library/tool:2"] = gate2
		h.eng.mu.Unlock()
		h.set(Cache{Name: "ai", Images: []string{"app:v1", "tool:2"}})
		if c := h.cache("ai"); c.Phase != PhaseUpdating {
			t.Errorf("adding an image to a Ready cache: %s %q, want Updating", c.Phase, c.Message)
		}
		close(gate2)
		synctest.Wait()
		if c := h.cache("ai"); c.Phase != PhaseReady {
			t.Errorf("after the second pull: %+v", c)
		}
	})
}

// TestPullBackoff: a failed pull is Failed with the engine's message and retried after 10s,
// 20s, 40s ... capped at 5 minutes, on the injected clock; it succeeds once the registry has
// the image. A Ready cache whose new image fails is UpdateFailed.
func TestPullBackoff(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		h.eng.offer(fakeImage("app:v1", "a1", 1))
		h.eng.setFail("app:v1", "manifest for app:v1 not found: manifest unknown")
		h.set(Cache{Name: "ai", Images: []string{"app:v1"}})
		h.run()
		defer h.stop()
		h.expectCalls("pull docker.io/library/app:v1")

		im := h.image("ai", "app:v1")
		if im.State != StateFailed || !strings.Contains(im.Reason, "manifest unknown") || im.Attempts != 1 || !im.NextRetry.Equal(t0.Add(10*time.Second)) {
			t.Fatalf("after one failure: %+v", im)
		}
		if c := h.cache("ai"); c.Phase != PhaseFailed || !strings.Contains(c.Message, "manifest unknown") {
			t.Errorf("phase %s %q, want Failed with the engine's message", c.Phase, c.Message)
		}

		for i, d := range []time.Duration{10, 20, 40, 80, 160, 300, 300} {
			d *= time.Second
			h.advance(d - time.Second)
			h.expectCalls()
			h.advance(time.Second)
			h.expectCalls("pull docker.io/library/app:v1")
			if im := h.image("ai", "app:v1"); im.Attempts != i+2 {
				t.Fatalf("retry %d: attempts %d", i+1, im.Attempts)
			}
		}

		h.eng.setFail("app:v1", "")
		h.advance(5 * time.Minute)
		h.expectCalls("pull docker.io/library/app:v1")
		if im := h.image("ai", "app:v1"); im.State != StateReady || im.Attempts != 0 || !im.NextRetry.IsZero() {
			t.Errorf("after the registry has it: %+v", im)
		}

		// A change to the cache retries at once, without waiting out the back-off.
		h.eng.setFail("bad:1", "unauthorized: authentication required")
		h.set(Cache{Name: "ai", Images: []string{"app:v1", "bad:1"}})
		h.expectCalls("pull docker.io/library/bad:1")
		if c := h.cache("ai"); c.Phase != PhaseUpdateFailed || !strings.Contains(c.Message, "unauthorized") {
			t.Errorf("a Ready cache whose new image fails: %s %q, want UpdateFailed", c.Phase, c.Message)
		}
		h.set(Cache{Name: "ai", Images: []string{"app:v1", "bad:1"}, PullSecrets: [][]byte{[]byte(`{"auths":{}}`)}})
		h.expectCalls("pull docker.io/library/bad:1")
	})
}

// TestPullSecrets: a pull uses the credential container.AuthFor picks from the listing caches'
// secrets; a secret that is not a .dockerconfigjson fails the pull with a reason.
func TestPullSecrets(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		h.eng.offer(fakeImage("registry.example.com/team/app:v1", "a1", 1))
		secret := fmt.Sprintf(`{"auths":{"registry.example.com":{"auth":%q}}}`, base64.StdEncoding.EncodeToString([]byte("robot:s3cret")))
		h.set(
			Cache{Name: "a", Images: []string{"registry.example.com/team/app:v1"}, PullSecrets: [][]byte{[]byte(`{"auths":{"other.example.com":{"username":"x","password":"y"}}}`)}},
			Cache{Name: "b", Images: []string{"registry.example.com/team/app:v1"}, PullSecrets: [][]byte{[]byte(secret)}},
			Cache{Name: "c", Images: []string{"broken.example.com/x:1"}, PullSecrets: [][]byte{[]byte(`not json`)}},
		)
		h.run()
		defer h.stop()
		h.eng.mu.Lock()
		got := h.eng.auths["registry.example.com/team/app:v1"]
		h.eng.mu.Unlock()
		if got == nil || got.Username != "robot" || got.Password != "s3cret" || got.Server != "registry.example.com" {
			t.Errorf("auth %+v, want robot from cache b's secret", got)
		}
		if im := h.image("c", "broken.example.com/x:1"); im.State != StateFailed || !strings.Contains(im.Reason, "pull secrets") {
			t.Errorf("bad secret: %+v", im)
		}
	})
}

// TestRetention: an owned image not used for retentionDays (since its last use, or its pull)
// is evicted and removed; one a replica used recently, one a container uses, one infera did
// not pull, and any in a cache without retention stay.
func TestRetention(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name      string
		retention int
		notOwned  bool // in the engine before the cache
		inUse     bool
		touchAt   time.Duration // 0: never
		after     time.Duration
		evicted   bool
	}{
		{name: "unused past retention", retention: 7, after: 7*day + time.Minute, evicted: true},
		{name: "unused within retention", retention: 7, after: 7*day - time.Minute},
		{name: "used two days ago", retention: 7, touchAt: 6 * day, after: 8 * day},
		{name: "used long ago", retention: 7, touchAt: 1 * day, after: 8*day + time.Minute, evicted: true},
		{name: "in use by a container", retention: 7, inUse: true, after: 30 * day},
		{name: "not pulled by infera", retention: 7, notOwned: true, after: 30 * day},
		{name: "no retention", retention: 0, after: 100 * day},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inBubble(t, func(t *testing.T, h *harness) {
				img := fakeImage("app:v1", "a1", 1)
				if tt.notOwned {
					h.eng.have(img)
				} else {
					h.eng.offer(img)
				}
				if tt.inUse {
					h.eng.setUsers("a1", 1)
				}
				h.set(Cache{Name: "ai", Images: []string{"app:v1"}, RetentionDays: tt.retention})
				h.run()
				defer h.stop()
				if tt.touchAt > 0 {
					h.advance(tt.touchAt)
					h.touch("app:v1")
				}
				h.advance(tt.after - tt.touchAt)

				im := h.image("ai", "app:v1")
				if tt.evicted {
					if im.State != StateEvicted || !strings.Contains(im.Reason, "retentionDays 7") || h.eng.has("app:v1") {
						t.Errorf("want evicted and removed: %+v, in engine %v", im, h.eng.has("app:v1"))
					}
					if c := h.cache("ai"); c.Phase != PhaseReady || !strings.Contains(c.Message, "1 of 1 images evicted") {
						t.Errorf("cache: %s %q", c.Phase, c.Message)
					}
					if _, ok := h.m.Cached("app:v1"); ok {
						t.Error("Cached after eviction")
					}
				} else if im.State != StateReady || !h.eng.has("app:v1") {
					t.Errorf("want kept: %+v, in engine %v", im, h.eng.has("app:v1"))
				}
			})
		})
	}
}

// TestSizeBound: past imageCacheSize the least recently used owned image is evicted and
// removed, skipping images in use; images infera did not pull do not count; an evicted image
// is not pulled again until its cache changes or a replica uses it.
func TestSizeBound(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		h.eng.offer(fakeImage("a:1", "a1", 1), fakeImage("b:1", "b1", 1), fakeImage("c:1", "c1", 1), fakeImage("d:1", "d1", 1))
		h.eng.have(fakeImage("base:1", "base", 5)) // not infera's: free
		h.set(Cache{Name: "ai", Images: []string{"a:1", "b:1", "base:1"}, SizeGiB: 2})
		h.run()
		defer h.stop()
		h.expectCalls("pull docker.io/library/a:1", "pull docker.io/library/b:1")
		if c := h.cache("ai"); c.Phase != PhaseReady || c.OwnedSize != 2*gibBytes {
			t.Fatalf("two images fit 2 GiB: %+v", c)
		}

		h.advance(time.Hour)
		h.touch("a:1") // b is now the least recently used
		h.set(Cache{Name: "ai", Images: []string{"a:1", "b:1", "base:1", "c:1"}, SizeGiB: 2})
		h.expectCalls("pull docker.io/library/c:1", "remove docker.io/library/b:1")
		b := h.image("ai", "b:1")
		if b.State != StateEvicted || !strings.Contains(b.Reason, "imageCacheSize 2 GiB") || h.eng.has("b:1") {
			t.Errorf("b: %+v (in engine %v), want evicted for imageCacheSize", b, h.eng.has("b:1"))
		}
		c := h.cache("ai")
		if c.Phase != PhaseReady || c.OwnedSize != 2*gibBytes || !strings.Contains(c.Message, "1 of 4 images evicted (b:1)") {
			t.Errorf("cache: %s %q owned %d", c.Phase, c.Message, c.OwnedSize)
		}

		// Not pulled again: not on the clock, not for the same set.
		h.advance(10 * time.Minute)
		h.set(Cache{Name: "ai", Images: []string{"a:1", "b:1", "base:1", "c:1"}, SizeGiB: 2})
		h.expectCalls()

		// A replica uses b: it is back, and the least recently used of the others goes, but
		// not a, which a container uses.
		h.eng.setUsers("a1", 1)
		h.advance(time.Hour)
		h.touch("b:1")
		h.expectCalls("pull docker.io/library/b:1", "remove docker.io/library/c:1")
		if a, c := h.image("ai", "a:1"), h.image("ai", "c:1"); a.State != StateReady || c.State != StateEvicted {
			t.Errorf("a (in use) %s, c %s: want Ready, Evicted", a.State, c.State)
		}

		// Over the bound with every owned image in use: nothing to evict, the message says so.
		h.eng.setUsers("b1", 1)
		h.set(Cache{Name: "ai", Images: []string{"a:1", "b:1", "d:1"}, SizeGiB: 1})
		h.expectCalls("pull docker.io/library/d:1", "remove docker.io/library/d:1")
		if c := h.cache("ai"); !strings.Contains(c.Message, "over imageCacheSize 1 GiB") || c.OwnedSize != 2*gibBytes {
			t.Errorf("over the bound, all in use: %q owned %d", c.Message, c.OwnedSize)
		}

		// A larger bound is a changed cache: its evicted images are pulled again.
		h.eng.setUsers("a1", 0)
		h.eng.setUsers("b1", 0)
		h.set(Cache{Name: "ai", Images: []string{"a:1", "b:1", "d:1"}, SizeGiB: 3})
		h.expectCalls("pull docker.io/library/d:1")
		if c := h.cache("ai"); c.Phase != PhaseReady || c.OwnedSize != 3*gibBytes || c.Message != "" {
			t.Errorf("after growing the bound: %+v", c)
		}
	})
}

// TestSharedImage: an image two caches list is pulled once; evicted from one, it stays in the
// engine for the other, and Cached finds it there.
func TestSharedImage(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		h.eng.offer(fakeImage("big:1", "g1", 2))
		h.set(
			Cache{Name: "small", Images: []string{"big:1"}, SizeGiB: 1},
			Cache{Name: "wide", Images: []string{"docker.io/library/big:1"}},
		)
		h.run()
		defer h.stop()
		h.expectCalls("pull docker.io/library/big:1")
		if s, w := h.image("small", "big:1"), h.image("wide", "docker.io/library/big:1"); s.State != StateEvicted || w.State != StateReady {
			t.Errorf("small %s, wide %s: want Evicted, Ready", s.State, w.State)
		}
		if !h.eng.has("big:1") {
			t.Error("removed although cache wide wants it")
		}
		if st, ok := h.m.Cached("big:1"); !ok || st.Image != "docker.io/library/big:1" {
			t.Errorf("Cached = %+v, %v; want wide's", st, ok)
		}
		// Without wide, nothing wants it: removed.
		h.set(Cache{Name: "small", Images: []string{"big:1"}, SizeGiB: 1})
		h.expectCalls("remove docker.io/library/big:1")
	})
}

// TestSetRemovesCache: a deleted cache's images go from the engine when infera pulled them, no
// other cache wants them and no container uses them; the others stay.
func TestSetRemovesCache(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		h.eng.offer(fakeImage("own:1", "o1", 1), fakeImage("shared:1", "s1", 1))
		h.eng.have(fakeImage("base:1", "b1", 1))
		a := Cache{Name: "a", Images: []string{"own:1", "shared:1", "base:1"}}
		b := Cache{Name: "b", Images: []string{"shared:1"}}
		h.set(a, b)
		h.run()
		defer h.stop()
		h.expectCalls("pull docker.io/library/own:1", "pull docker.io/library/shared:1")

		h.eng.setUsers("o1", 1)
		h.set(b)
		h.expectCalls() // own is in use, shared is b's, base is not infera's
		if got := h.m.Statuses(); len(got) != 1 || got[0].Name != "b" {
			t.Fatalf("statuses %+v, want only b", got)
		}
		if _, ok := h.m.Cached("own:1"); ok {
			t.Error("an image of a deleted cache is Cached")
		}

		h.eng.setUsers("o1", 0)
		h.advance(time.Minute)
		h.expectCalls("remove docker.io/library/own:1")

		h.set()
		h.expectCalls("remove docker.io/library/shared:1")
		if !h.eng.has("base:1") || h.eng.has("shared:1") || h.eng.has("own:1") {
			t.Error("engine keeps what infera did not pull and nothing else")
		}
		if len(h.m.Statuses()) != 0 {
			t.Errorf("statuses %+v, want none", h.m.Statuses())
		}
	})
}

// TestSetCancelsPull: deleting the cache of the image being pulled stops the pull.
func TestSetCancelsPull(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		h.eng.offer(fakeImage("app:v1", "a1", 1))
		h.eng.gate["docker.io/library/app:v1"] = make(chan struct{}) // never opens
		h.set(Cache{Name: "ai", Images: []string{"app:v1"}})
		h.run()
		defer h.stop()
		h.set()
		h.expectCalls("pull docker.io/library/app:v1")
		if h.eng.has("app:v1") || len(h.m.Statuses()) != 0 {
			t.Error("the cancelled pull left something")
		}
	})
}

// TestEngineTrouble: while the engine does not list its containers nothing is evicted; while
// it does not answer lookups the cache stays Preparing.
func TestEngineTrouble(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		h.eng.offer(fakeImage("app:v1", "a1", 1))
		h.eng.lookErr = errEngineDown
		h.eng.usersErr = errEngineDown
		h.set(Cache{Name: "ai", Images: []string{"app:v1"}, RetentionDays: 1})
		h.run()
		defer h.stop()
		if c := h.cache("ai"); c.Phase != PhasePreparing || !strings.Contains(c.Message, errEngineDown.Error()) {
			t.Errorf("engine not answering lookups: %s %q, want Preparing with its error", c.Phase, c.Message)
		}
		h.expectCalls()
		h.eng.mu.Lock()
		h.eng.lookErr = nil
		h.eng.mu.Unlock()
		h.advance(time.Minute)
		h.expectCalls("pull docker.io/library/app:v1")
		h.advance(48 * time.Hour)
		if im := h.image("ai", "app:v1"); im.State != StateReady {
			t.Errorf("evicted without knowing who uses it: %+v", im)
		}
		h.eng.mu.Lock()
		h.eng.usersErr = nil
		h.eng.mu.Unlock()
		h.advance(time.Minute)
		if im := h.image("ai", "app:v1"); im.State != StateEvicted {
			t.Errorf("once the engine answers: %+v", im)
		}
	})
}

// TestPersistence: ownership, pull and use times and evictions survive a restart (a new
// Manager over the same directory); a state file that cannot be read starts empty, owning
// nothing.
func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		eng := newFakeEngine()
		clk := testutil.NewFakeClock(t0)
		eng.offer(fakeImage("app:v1", "a1", 1), fakeImage("b:1", "b1", 1), fakeImage("c:1", "c1", 1))
		eng.have(fakeImage("base:1", "base", 1))
		caches := []Cache{
			{Name: "ai", Images: []string{"app:v1", "base:1"}},
			{Name: "lru", Images: []string{"b:1", "c:1"}, SizeGiB: 1},
		}

		h := newHarness(t, dir, eng, clk)
		h.set(caches...)
		h.run()
		h.advance(time.Hour)
		h.touch("app:v1")
		h.stop()
		eng.takeCalls()
		if tmps, _ := filepath.Glob(filepath.Join(dir, stateName+".tmp-*")); len(tmps) > 0 {
			t.Errorf("temporary files left: %v", tmps)
		}
		evicted := h.image("lru", "b:1").State == StateEvicted
		if !evicted || h.image("lru", "c:1").State != StateReady {
			t.Fatalf("lru: %+v", h.cache("lru"))
		}

		h2 := newHarness(t, dir, eng, clk)
		if len(h2.m.Statuses()) != 0 {
			t.Errorf("statuses before Set: %+v", h2.m.Statuses())
		}
		h2.run() // before Set: every image looks unlisted, and none may go
		defer h2.stop()
		h2.advance(time.Minute)
		h2.expectCalls()
		h2.set(caches...)
		h2.expectCalls() // nothing pulled again: b stays evicted
		a := h2.image("ai", "app:v1")
		if a.State != StateReady || !a.Owned || !a.PulledAt.Equal(t0) || !a.LastUsed.Equal(t0.Add(time.Hour)) {
			t.Errorf("app after restart: %+v", a)
		}
		if base := h2.image("ai", "base:1"); base.Owned {
			t.Errorf("base became owned: %+v", base)
		}
		if b := h2.image("lru", "b:1"); b.State != StateEvicted || !strings.Contains(b.Reason, "imageCacheSize") {
			t.Errorf("b after restart: %+v", b)
		}
		if c := h2.cache("ai"); c.Phase != PhaseReady {
			t.Errorf("ai after restart: %+v", c)
		}
		h2.set()
		h2.expectCalls("remove docker.io/library/app:v1", "remove docker.io/library/c:1")
		if !eng.has("base:1") {
			t.Error("base removed")
		}
	})
}

func TestPersistenceUnreadable(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateName), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, dir, newFakeEngine(), testutil.NewFakeClock(t0))
		h.eng.have(fakeImage("app:v1", "a1", 1))
		h.set(Cache{Name: "ai", Images: []string{"app:v1"}})
		h.run()
		defer h.stop()
		if im := h.image("ai", "app:v1"); im.State != StateReady || im.Owned {
			t.Errorf("%+v: want Ready, not owned", im)
		}
		h.set()
		h.expectCalls()
	})
}

// TestCached: Cached matches references as normalized, and only Ready images.
func TestCached(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		h.eng.have(fakeImage("app:v1", "a1", 1))
		h.eng.have(fakeImage("registry.example.com:5000/team/tool", "t1", 1))
		h.eng.setFail("missing:1", "manifest unknown")
		h.set(Cache{Name: "ai", Images: []string{"app:v1", "registry.example.com:5000/team/tool", "missing:1", "Not A Ref"}})
		h.run()
		defer h.stop()
		tests := []struct {
			image string
			want  bool
		}{
			{"app:v1", true},
			{"docker.io/library/app:v1", true},
			{"library/app:v1", true},
			{"index.docker.io/library/app:v1", true},
			{"app:v2", false},
			{"app", false},
			{"other/app:v1", false},
			{"registry.example.com:5000/team/tool", true},
			{"registry.example.com:5000/team/tool:latest", true},
			{"registry.example.com/team/tool", false},
			{"missing:1", false},
			{"Not A Ref", false},
		}
		for _, tt := range tests {
			st, ok := h.m.Cached(tt.image)
			if ok != tt.want {
				t.Errorf("Cached(%q) = %v, want %v", tt.image, ok, tt.want)
			}
			if ok && st.State != StateReady {
				t.Errorf("Cached(%q) status %+v", tt.image, st)
			}
		}
		if im := h.image("ai", "Not A Ref"); im.State != StateFailed || !strings.Contains(im.Reason, "invalid image reference") {
			t.Errorf("invalid reference: %+v", im)
		}
		if c := h.cache("ai"); c.Phase != PhaseFailed {
			t.Errorf("phase %s, want Failed", c.Phase)
		}
	})
}

// TestTouchUnknown: touching an image no cache lists changes nothing.
func TestTouchUnknown(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		h.run()
		defer h.stop()
		h.touch("app:v1")
		h.touch("Not A Ref")
		if len(h.m.Statuses()) != 0 {
			t.Error("a cache appeared")
		}
		h.expectCalls()
	})
}
