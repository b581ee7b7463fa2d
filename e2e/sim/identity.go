package sim

// InstanceMAC is the MAC address IMDS reports for the instance's primary
// network interface (meta-data/mac and network/interfaces/macs/<mac>/). A
// guest whose NIC carries it looks like the instance to cloud-init, which
// matches the metadata's interfaces to NICs by MAC.
func InstanceMAC(instanceID string) string { return macFor(instanceID) }
