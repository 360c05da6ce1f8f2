package proxy

import (
	"github.com/silo-proxy/silo-proxy/config"
)

// routeTable maps database names to silos for one configuration. It is
// built completely before it replaces the previous table (an atomic pointer
// swap), so a connection always routes against one consistent config.
type routeTable struct {
	cfg      *config.Config
	byDB     map[string]string   // explicit database -> silo
	catchAll string              // silo listing "*", or ""
	silos    map[string]struct{} // every configured silo
}

func newRouteTable(cfg *config.Config) *routeTable {
	t := &routeTable{
		cfg:   cfg,
		byDB:  make(map[string]string),
		silos: make(map[string]struct{}, len(cfg.Silos)),
	}
	for i := range cfg.Silos {
		s := &cfg.Silos[i]
		t.silos[s.Name] = struct{}{}
		for _, db := range s.Databases {
			if db == config.CatchAll {
				t.catchAll = s.Name
				continue
			}
			t.byDB[db] = s.Name
		}
	}
	return t
}

// route returns the silo serving db with (*config.Config).Route's rule: the
// silo that lists it, else the catch-all silo. ok is false when neither
// exists; the client then gets 3D000.
func (t *routeTable) route(db string) (silo string, ok bool) {
	if s, found := t.byDB[db]; found {
		return s, true
	}
	if t.catchAll != "" {
		return t.catchAll, true
	}
	return "", false
}

// has reports whether the config names silo.
func (t *routeTable) has(silo string) bool {
	_, ok := t.silos[silo]
	return ok
}

// names returns the configured silo names in config order.
func (t *routeTable) names() []string {
	out := make([]string, 0, len(t.cfg.Silos))
	for i := range t.cfg.Silos {
		out = append(out, t.cfg.Silos[i].Name)
	}
	return out
}
