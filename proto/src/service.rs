//! Names and metadata of the services as registered with the NATS service API, so
//! `nats micro ls` and `$SRV.PING` show them.

/// vm-controller's service name.
pub const VM_CONTROLLER: &str = "vm-controller";
/// netd's service name.
pub const NETD: &str = "netd";
/// stord's service name.
pub const STORD: &str = "stord";
/// dnsd's service name.
pub const DNSD: &str = "dnsd";

/// Every banger service, in start-up order.
pub const ALL: &[&str] = &[STORD, NETD, VM_CONTROLLER, DNSD];

/// Service-API metadata key: the host id.
pub const META_HOST: &str = "host";
/// Service-API metadata key: the contract version.
pub const META_CONTRACT: &str = "contract";
/// Service-API metadata key: the VM subnet of a host (netd).
pub const META_SUBNET: &str = "subnet";
/// Service-API metadata key: the host's address on the lab network.
pub const META_HOST_ADDR: &str = "host_addr";
/// Service-API metadata key: whether the hypervisor is simulated (vm-controller).
pub const META_VMM: &str = "vmm";
/// Service-API metadata key: DNS listener addresses (dnsd).
pub const META_DNS_LISTEN: &str = "listen";

/// The service API's own ping subject.
pub const SRV_PING: &str = "$SRV.PING";
/// The service API's info subject.
pub const SRV_INFO: &str = "$SRV.INFO";
/// The service API's stats subject.
pub const SRV_STATS: &str = "$SRV.STATS";
