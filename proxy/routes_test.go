package proxy

import (
	"testing"

	"github.com/silo-proxy/silo-proxy/config"
)

// TestRouteTableMatchesConfigRoute checks the proxy's routing table against
// (*config.Config).Route, the rule the rest of the project uses.
func TestRouteTableMatchesConfigRoute(t *testing.T) {
	t.Parallel()
	configs := map[string]*config.Config{
		"catch-all last": {Silos: []config.Silo{
			{Name: "sales", Databases: []string{"sales", "sales_archive"}},
			{Name: "default", Databases: []string{config.CatchAll}},
		}},
		"catch-all first, with its own database": {Silos: []config.Silo{
			{Name: "default", Databases: []string{config.CatchAll, "postgres"}},
			{Name: "app", Databases: []string{"app"}},
		}},
		"no catch-all": {Silos: []config.Silo{
			{Name: "app", Databases: []string{"app", "app_reports"}},
		}},
		"no silos": {},
	}
	dbs := []string{"sales", "sales_archive", "app", "app_reports", "postgres", "other", "", "*", "SALES"}
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rt := newRouteTable(cfg)
			for _, db := range dbs {
				want := cfg.Route(db)
				got, ok := rt.route(db)
				if want == nil {
					if ok {
						t.Errorf("route(%q) = %q, config routes nowhere", db, got)
					}
					continue
				}
				if !ok || got != want.Name {
					t.Errorf("route(%q) = %q %v, config routes to %q", db, got, ok, want.Name)
				}
			}
			for _, s := range cfg.Silos {
				if !rt.has(s.Name) {
					t.Errorf("has(%q) = false", s.Name)
				}
			}
			if rt.has("nope") {
				t.Error(`has("nope") = true`)
			}
		})
	}
}
