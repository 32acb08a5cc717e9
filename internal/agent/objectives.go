package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/pg/keeper"
)

// objectives is whether the deployment meets its recovery objectives now,
// as this node sees it (drill.Live): the "objectives" section of
// /api/v1/status, nil without objectives.
func (a *Agent) objectives() *drill.Compliance {
	cfg := a.config()
	if cfg.Objectives == nil {
		return nil
	}
	c := drill.Live(cfg, a.current().observed(cfg))
	return &c
}

// observed gathers what this node sees for drill.Live, from memory: the
// membership records (which nodes serve each balancer) and, on a database
// node, its keeper's view and the backups'.
func (rs roles) observed(cfg *config.Config) drill.Observed {
	obs := drill.Observed{Now: time.Now()}
	if c := rs.coord; c != nil && c.etcd() != nil {
		obs.BalancerUp = map[string][]string{}
		c.mu.Lock()
		for node, m := range c.members {
			for name := range cfg.Balancers {
				if m.Checks[coord.BalancerState(name)] == "up" {
					obs.BalancerUp[name] = append(obs.BalancerUp[name], node)
				}
			}
		}
		c.mu.Unlock()
	}
	if rs.db == nil {
		return obs
	}
	k := rs.db.keeper.Load()
	if k == nil {
		return obs
	}
	d := &drill.DatabaseSeen{Primary: k.Owner().Status().Holder, Members: k.Members(), Sync: k.Sync()}
	if st, ok := k.RegionStatus(); ok {
		for _, s := range st.States {
			if s.Leader && s.Member.Role == keeper.RoleStandbyLeader {
				d.StandbyLeader = &s
			}
		}
	}
	if b := rs.backup.status(); b != nil {
		if b.Newest != nil {
			d.NewestBackup = b.Newest.Stopped
		}
		if ar := b.Archive; ar != nil {
			lag := time.Duration(ar.LagSeconds * float64(time.Second))
			d.ArchiveLag = &lag
		}
	}
	obs.Database = d
	return obs
}

// objectivesCollector exports the objectives' compliance at each scrape:
// haven_objectives_met (1 when every part this node can judge meets its
// objectives) and haven_objective_failing{part}, the reasons failing now.
type objectivesCollector struct {
	a                      *Agent
	met, failing, rto, rpo *prometheus.Desc
}

func newObjectivesCollector(a *Agent) *objectivesCollector {
	return &objectivesCollector{
		a: a,
		met: prometheus.NewDesc("haven_objectives_met",
			"1 when the deployment meets its recovery objectives now, as far as this node can judge (haven.yaml objectives; absent without them).", nil, nil),
		failing: prometheus.NewDesc("haven_objective_failing",
			"Reasons the deployment fails a part's recovery objectives now (the status API's objectives section names them).", []string{"part"}, nil),
		rto: prometheus.NewDesc("haven_objective_rto_seconds",
			"A part's recovery time objective (haven.yaml objectives), for alert rules to compare with.", []string{"part"}, nil),
		rpo: prometheus.NewDesc("haven_objective_rpo_seconds",
			"A part's recovery point objective (haven.yaml objectives), for alert rules to compare lags with.", []string{"part"}, nil),
	}
}

func (c *objectivesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.met
	ch <- c.failing
	ch <- c.rto
	ch <- c.rpo
}

func (c *objectivesCollector) Collect(ch chan<- prometheus.Metric) {
	o := c.a.config().Objectives
	for _, part := range []string{config.PartWeb, config.PartDatabase, config.PartRegion} {
		rto, rpo := o.For(part)
		if rto != nil {
			ch <- prometheus.MustNewConstMetric(c.rto, prometheus.GaugeValue, rto.Seconds(), part)
		}
		if rpo != nil {
			ch <- prometheus.MustNewConstMetric(c.rpo, prometheus.GaugeValue, rpo.Seconds(), part)
		}
	}
	st := c.a.objectives()
	if st == nil {
		return
	}
	met := 0.0
	if st.Met {
		met = 1
	}
	ch <- prometheus.MustNewConstMetric(c.met, prometheus.GaugeValue, met)
	n := map[string]int{}
	for _, f := range st.Failing {
		n[f.Part]++
	}
	for _, part := range st.Checked {
		ch <- prometheus.MustNewConstMetric(c.failing, prometheus.GaugeValue, float64(n[part]), part)
	}
}
