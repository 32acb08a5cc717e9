package config

import "net/netip"

func (v *validator) regions() {
	for _, rname := range sortedKeys(v.cfg.Regions) {
		rpath := "regions." + rname
		if !isName(rname) {
			v.keyErrorf(rpath, "%q %s", rname, badName)
		}
		nodes := v.cfg.Regions[rname].Nodes
		if len(nodes) == 0 {
			v.errorf(rpath+".nodes", "required: at least one node, such as nodes: {lb1: {address: 198.18.1.11}}")
		}
		for _, nname := range sortedKeys(nodes) {
			v.node(nodes[nname], rpath+".nodes."+nname)
		}
	}
	v.nodeNames = sortedKeys(v.nodes)
	if len(v.nodeNames) == 0 {
		v.errorf("regions", "required: at least one region with one node, such as regions: {east: {nodes: {lb1: {address: 198.18.1.11}}}}")
	}
}

func (v *validator) node(n *Node, path string) {
	if !isName(n.Name) {
		v.keyErrorf(path, "%q %s", n.Name, badName)
	}
	if prev, dup := v.nodes[n.Name]; dup {
		v.keyErrorf(path, "node %s is already defined in region %s: node names are unique across regions", n.Name, prev.Region)
	} else {
		v.nodes[n.Name] = n
	}
	if n.Address == "" {
		v.errorf(path+".address", "required: the node's IP address, such as address: 198.18.1.11")
	} else if _, err := netip.ParseAddr(n.Address); err != nil {
		v.errorf(path+".address", "%q is not an IP address (IPv4 or IPv6)", n.Address)
	}
	if v.given(path + ".admin") {
		if _, _, err := splitListen(n.Admin); err != nil {
			v.errorf(path+".admin", "%q is not a listen address: %v", n.Admin, err)
		}
	}
}
