package lazymount_test

import (
	"slices"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/lazymount"
)

func TestParseFuseArgs(t *testing.T) {
	def := lazymount.DefaultOptions()
	with := func(f func(*lazymount.Options)) lazymount.Options {
		o := lazymount.DefaultOptions()
		f(&o)
		return o
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    lazymount.Options
		ignored []string
	}{
		{"none", nil, def, nil},
		{"jindo sample", []string{"-okernel_cache", "-oro", "-oattr_timeout=7200", "-oentry_timeout=7200", "-ometrics_port=9089"},
			with(func(o *lazymount.Options) {
				o.KernelCache, o.AttrTimeout, o.EntryTimeout = true, 7200*time.Second, 7200*time.Second
			}), []string{"-ometrics_port=9089"}},
		{"zero timeouts, auto_cache", []string{"-oauto_cache", "-oattr_timeout=0", "-oentry_timeout=0", "-onegative_timeout=0"},
			with(func(o *lazymount.Options) { o.KernelCache, o.AttrTimeout, o.EntryTimeout = true, 0, 0 }), nil},
		{"alluxio fuse-opts", []string{"fuse", "--fuse-opts=kernel_cache,rw,allow_other,entry_timeout=60,attr_timeout=60,max_background=256,congestion_threshold=256"},
			with(func(o *lazymount.Options) {
				o.KernelCache, o.AllowOther = true, true
				o.EntryTimeout, o.AttrTimeout = time.Minute, time.Minute
				o.MaxBackground, o.CongestionThreshold = 256, 256
			}), []string{"fuse", "-orw"}},
		{"separate -o, comma list", []string{"-o", "ro,negative_timeout=2.5,max_readahead=131072,nonempty", "-f"},
			with(func(o *lazymount.Options) { o.NegativeTimeout, o.MaxReadAhead = 2500*time.Millisecond, 131072 }),
			[]string{"-ononempty", "-f"}},
		{"bad values are ignored", []string{"-oattr_timeout=soon", "-oentry_timeout=-1", "-onegative_timeout=NaN", "-omax_background=0", "-omax_background=70000", "-ocongestion_threshold=x", "-okernel_cache=1", "-omax_readahead=0"},
			def, []string{"-oattr_timeout=soon", "-oentry_timeout=-1", "-onegative_timeout=NaN", "-omax_background=0", "-omax_background=70000", "-ocongestion_threshold=x", "-okernel_cache=1", "-omax_readahead=0"}},
		{"trailing -o, empty items", []string{"-oro,,kernel_cache,", "-o"},
			with(func(o *lazymount.Options) { o.KernelCache = true }), []string{"-o"}},
		{"last one wins", []string{"-oattr_timeout=1", "-oattr_timeout=3"},
			with(func(o *lazymount.Options) { o.AttrTimeout = 3 * time.Second }), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ignored := lazymount.ParseFuseArgs(tc.args)
			if got != tc.want {
				t.Errorf("options\n got %+v\nwant %+v", got, tc.want)
			}
			if !slices.Equal(ignored, tc.ignored) {
				t.Errorf("ignored %q, want %q", ignored, tc.ignored)
			}
		})
	}
}
