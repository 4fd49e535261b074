"""Generated from schemas/*.avsc by `python -m schemas typed`: do not edit."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict


class FlavorCreated(TypedDict):
    flavorid: str
    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    ephemeral_gb: int
    swap_mb: int
    is_public: bool
    extra_specs: dict[str, str]


# An image in novalog's image store, as Glance describes it.
class ImageRegistered(TypedDict):
    image_id: str
    name: str
    status: str
    disk_format: str
    container_format: str
    size: int
    checksum: str
    min_disk: int
    min_ram: int
    location: str
    visibility: str
    properties: dict[str, str]
    owner: str | None


class NetworkCreated(TypedDict):
    network_id: str
    name: str
    cidr: str
    gateway_ip: str
    allocation_start: str
    allocation_end: str
    project_id: str | None
    shared: bool


class ProjectCreated(TypedDict):
    project_id: str
    name: str
    domain: str


# Only a password hash (never the password) travels on the log.
class UserCreated(TypedDict):
    user_id: str
    name: str
    password_hash: str
    default_project_id: str | None
    domain: str


class RoleAssigned(TypedDict):
    user_id: str
    project_id: str
    role: str


# A per-project limit: instances, cores or ram (MB); -1 is unlimited.
class QuotaSet(TypedDict):
    project_id: str
    resource: str
    limit: int


# An SSH key pair a user can name in key_name.
class KeypairCreated(TypedDict):
    name: str
    user_id: str
    public_key: str
    fingerprint: str
    type: str


# A server group whose policy the affinity filters enforce (scheduler hint 'group').
class ServerGroupCreated(TypedDict):
    group_id: str
    name: str
    policy: str
    project_id: str
    user_id: str | None


# A user's key pair is gone; servers booted with it keep their key_name.
class KeypairDeleted(TypedDict):
    user_id: str
    name: str


# A server group is gone; its members stay where they are, unconstrained.
class ServerGroupDeleted(TypedDict):
    group_id: str
    project_id: str


# An image's data is stored: it is active and bootable from now on.
class ImageUploaded(TypedDict):
    image_id: str
    size: int
    checksum: str
    os_hash_value: str
    virtual_size: int | None
    location: str


# An image is gone; cached base copies on the hosts are left to them.
class ImageDeleted(TypedDict):
    image_id: str


# A network's one IPv4 subnet: from now on its servers get addresses from it.
class SubnetCreated(TypedDict):
    network_id: str
    subnet_id: str
    name: str
    cidr: str
    gateway_ip: str
    allocation_start: str
    allocation_end: str


# A network no server uses is gone.
class NetworkDeleted(TypedDict):
    network_id: str


# A flavor's extra specs, all of them, as they are now (set or unset by an admin).
class FlavorExtraSpecsSet(TypedDict):
    flavorid: str
    extra_specs: dict[str, str]


# A flavor can no longer be chosen; servers of it keep their embedded copy.
class FlavorDeleted(TypedDict):
    flavorid: str


# What compute needs to fetch the image into its base-image cache.
class ImageToBoot(TypedDict):
    id: str
    name: str
    disk_format: str
    checksum: str
    size: int
    location: str
    properties: dict[str, str]


# A network as the conductor found it in the catalog, so compute and the network role need
# no look-up.
class NetworkToAttach(TypedDict):
    network_id: str
    name: str
    cidr: str
    gateway_ip: str
    allocation_start: str
    allocation_end: str
    fixed_ip: str | None


# The instance's server group and its policy, for the host's late check (Nova's
# _validate_instance_group_policy).
class ServerGroupPolicy(TypedDict):
    group_id: str
    policy: str


# Command from the conductor to one compute agent (its per-host topic), like Nova's RPC
# cast.
class BuildAndRunInstance(TypedDict):
    instance_uuid: str
    host: str
    node: str
    attempt: int
    name: str
    project_id: str
    user_id: str
    flavor: Flavor
    image: ImageToBoot | None
    networks: list[NetworkToAttach]
    block_device_mapping: list[BlockDeviceMapping]
    key_name: str | None
    user_data: str | None
    metadata: dict[str, str]
    server_group: ServerGroupPolicy | None
    config_drive: bool
    admin_password: str | None
    key_data: str | None
    launch_index: int


# Tear the instance down on this host: destroy and undefine the domain, remove its disks,
# release its ports and its claim.
class TerminateInstance(TypedDict):
    instance_uuid: str
    host: str
    attempt: int


# Reboot the instance's domain on this host (HARD: destroy and start it again).
class RebootInstance(TypedDict):
    instance_uuid: str
    host: str
    hard: bool


# Shut the instance's domain off on this host.
class StopInstance(TypedDict):
    instance_uuid: str
    host: str


# Start the instance's (stopped) domain on this host.
class StartInstance(TypedDict):
    instance_uuid: str
    host: str


# To the destination: claim the new flavor for the incoming instance (Nova's prep_resize /
# pre_live_migration / rebuild claim).
class PrepareMigration(TypedDict):
    instance_uuid: str
    host: str
    node: str
    migration: Migration
    build: BuildAndRunInstance
    ports: list[Port]


# To the source: copy the disks to the destination (resize / migrate: power off first; live:
# the guest keeps running), then FinishMigration there.
class MigrateInstance(TypedDict):
    instance_uuid: str
    host: str
    migration: Migration
    dest_host: str
    dest_instances_path: str


# To the destination: the guest defined and started there (disks copied, or new ones from
# the image for an evacuation).
class FinishMigration(TypedDict):
    instance_uuid: str
    host: str
    migration: Migration
    disks: list[Disk]
    power_on: bool


# To the old host: destroy the guest's domain, remove its disks, release its claim; its
# addresses stay with the instance.
class CleanUpSource(TypedDict):
    instance_uuid: str
    host: str
    migration_id: str
    kind: str
    confirm: bool


# To the destination of a resize: destroy the new guest and release its claim, then
# FinishRevertMigration to the source.
class RevertMigration(TypedDict):
    instance_uuid: str
    host: str
    migration: Migration


# To the source of a resize: the old guest runs again (or stays off if it was stopped).
class FinishRevertMigration(TypedDict):
    instance_uuid: str
    host: str
    migration: Migration


# Boot the guest from a rescue disk made from the image, its own disk attached second.
class RescueInstance(TypedDict):
    instance_uuid: str
    host: str
    image: ImageToBoot | None


# Boot the guest from its own disk again and drop the rescue disk.
class UnrescueInstance(TypedDict):
    instance_uuid: str
    host: str


# A nova-compute service came up on a host.
class ComputeServiceStarted(TypedDict):
    host: str
    binary: str
    zone: str
    hypervisor_type: str
    hypervisor_hostname: str
    host_ip: str
    version: str


# The resource tracker's view of its node: totals, usage and allocation ratios.
class ComputeResourcesReported(TypedDict):
    host: str
    node: str
    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int
    memory_mb_used: int
    local_gb_used: int
    running_vms: int
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    disk_allocation_ratio: float
    cpu_arch: str
    hypervisor_type: str
    instance_uuids: list[str]


# A control-plane service (scheduler, conductor, network, projector) started; compute hosts
# announce themselves with ComputeServiceStarted.
class ServiceStarted(TypedDict):
    host: str
    binary: str
    zone: str
    version: str


# A service is alive; up / down is decided by the age of the last one.
class ServiceHeartbeat(TypedDict):
    host: str
    binary: str


# An admin disabled a service; the scheduler skips its host.
class ServiceDisabled(TypedDict):
    host: str
    binary: str
    reason: str | None


class ServiceEnabled(TypedDict):
    host: str
    binary: str


# An admin removed a host (its services and node) from the cloud.
class HostRemoved(TypedDict):
    host: str


# An admin deleted a service (DELETE /os-services/{id}); a nova-compute one takes its
# compute node and its place in the scheduler's view with it, until the host starts again.
class ServiceDeleted(TypedDict):
    host: str
    binary: str


# Snapshot of the flavor at request time, as Nova embeds it in the instance.
class Flavor(TypedDict):
    flavorid: str
    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    ephemeral_gb: int
    swap_mb: int
    extra_specs: dict[str, str]


class Image(TypedDict):
    id: str
    name: str
    min_disk: int
    min_ram: int
    properties: dict[str, str]


class RequestedNetwork(TypedDict):
    network_id: str | None
    fixed_ip: str | None
    port_id: str | None


class BlockDeviceMapping(TypedDict):
    source_type: str
    destination_type: str
    uuid: str | None
    boot_index: int | None
    volume_size: int | None
    guest_format: str | None
    delete_on_termination: bool
    volume_id: str | None
    connection: VolumeConnection | None
    device: str | None
    attachment_id: str | None


# nova-api accepted POST /servers: vm_state building, task_state scheduling.
class InstanceBuildRequested(TypedDict):
    name: str
    project_id: str
    user_id: str
    reservation_id: str
    launch_index: int
    flavor: Flavor
    image: Image | None
    networks: list[RequestedNetwork]
    block_device_mapping: list[BlockDeviceMapping]
    key_name: str | None
    metadata: dict[str, str]
    user_data: str | None
    availability_zone: str | None
    forced_host: str | None
    forced_node: str | None
    scheduler_hints: dict[str, list[str]]
    is_admin: bool
    config_drive: bool
    security_groups: list[str]
    admin_password: str | None
    key_data: str | None


# The scheduler chose a host.
class InstanceScheduled(TypedDict):
    host: str
    node: str
    attempt: int
    weighed_hosts: list[str]


class FilterResult(TypedDict):
    filter: str
    hosts_in: int
    hosts_out: int


# No host passed every filter; vm_state becomes error.
class InstanceNoValidHost(TypedDict):
    attempt: int
    reason: str
    filters: list[FilterResult]


# The conductor sent BuildAndRunInstance to the host's compute topic.
class InstanceBuildDispatched(TypedDict):
    host: str
    node: str
    attempt: int


# The resource tracker of the host reserved the flavor's resources.
class InstanceClaimAccepted(TypedDict):
    host: str
    node: str
    attempt: int
    vcpus: int
    memory_mb: int
    disk_gb: int


# The host no longer fits the request; the conductor reschedules.
class InstanceClaimRefused(TypedDict):
    host: str
    node: str
    attempt: int
    reason: str


# task_state networking.
class InstanceNetworkingStarted(TypedDict):
    host: str
    attempt: int


class Port(TypedDict):
    port_id: str
    network_id: str
    network_name: str
    ip_address: str
    mac_address: str


# Ports (IP + MAC) bound to the instance.
class InstanceNetworkAllocated(TypedDict):
    host: str
    attempt: int
    ports: list[Port]


# task_state block_device_mapping.
class InstanceBlockDeviceMappingStarted(TypedDict):
    host: str
    attempt: int


class Disk(TypedDict):
    device: str
    path: str
    format: str
    size_gb: int
    backing_file: str | None


# Disks prepared: a qcow2 overlay on the cached base image, plus ephemeral / swap.
class InstanceBlockDevicesMapped(TypedDict):
    host: str
    attempt: int
    disks: list[Disk]


# task_state spawning.
class InstanceSpawningStarted(TypedDict):
    host: str
    attempt: int


# Domain defined and running: vm_state active, task_state None, power_state running.
class InstanceSpawned(TypedDict):
    host: str
    node: str
    attempt: int
    domain_name: str
    power_state: int
    launched_at: datetime


# A build step failed on a host; what it took has been released.
class InstanceBuildFailed(TypedDict):
    host: str
    attempt: int
    stage: str
    reason: str
    retryable: bool


# The conductor asks the scheduler again, excluding the hosts already tried.
class InstanceRescheduled(TypedDict):
    attempt: int
    excluded_hosts: list[str]
    reason: str


# vm_state error, task_state None, with Nova's fault.
class InstanceErrored(TypedDict):
    code: int
    message: str
    details: str | None


# DELETE /servers/{id} accepted: task_state deleting, from any state (as Nova allows); the
# conductor decides where it is carried out.
class InstanceDeleteRequested(TypedDict):
    project_id: str
    user_id: str
    host: str | None


# A compute host began tearing the instance down (Nova's compute_terminate_instance).
class InstanceTerminateStarted(TypedDict):
    host: str
    attempt: int


# The instance is gone: domain, disks, addresses and claim released (by its host), or it
# never reached one (a local delete, by the conductor). A repeated InstanceDeleted changes
# nothing.
class InstanceDeleted(TypedDict):
    host: str | None
    local: bool
    terminated_at: datetime


# POST /servers/{id}/action reboot accepted by the API: task_state rebooting (SOFT) or
# rebooting_hard (HARD), when the fold allows it from the current state.
class InstanceRebootRequested(TypedDict):
    type: str


# The host took the reboot: reboot_pending(_hard).
class InstanceRebootPending(TypedDict):
    host: str
    hard: bool


# The host is rebooting the domain: reboot_started(_hard).
class InstanceRebootStarted(TypedDict):
    host: str
    hard: bool


# The reboot is done: vm_state active, no task.
class InstanceRebooted(TypedDict):
    host: str
    hard: bool
    power_state: int


# os-stop accepted by the API: task_state powering-off.
class InstanceStopRequested(TypedDict):
    pass


# The domain is shut off: vm_state stopped.
class InstanceStopped(TypedDict):
    host: str
    power_state: int


# os-start accepted by the API: task_state powering-on.
class InstanceStartRequested(TypedDict):
    pass


# The domain runs again: vm_state active.
class InstanceStarted(TypedDict):
    host: str
    power_state: int


# The host's periodic power-state sync found the domain in another power state than the log
# says, with no task in progress (a domain that vanished: power_state 0).
class InstancePowerStateChanged(TypedDict):
    host: str
    power_state: int


# resize (another flavor) or migrate (the same flavor, another host) accepted by the API:
# task_state resize_prep.
class InstanceResizeRequested(TypedDict):
    flavor: Flavor
    migrate: bool
    host: str | None


# confirmResize accepted (by the API, or the conductor's auto-confirm after
# resize_confirm_window): the source host is cleaned up.
class InstanceResizeConfirmRequested(TypedDict):
    automatic: bool


# revertResize accepted: task_state resize_reverting.
class InstanceResizeRevertRequested(TypedDict):
    pass


# os-migrateLive accepted: task_state migrating, vm_state unchanged.
class InstanceLiveMigrationRequested(TypedDict):
    host: str | None
    block_migration: bool


# evacuate accepted (the source host's service is down): task_state rebuilding.
class InstanceEvacuateRequested(TypedDict):
    host: str | None
    on_shared_storage: bool


# rescue accepted: task_state rescuing.
class InstanceRescueRequested(TypedDict):
    rescue_image_ref: str | None


# unrescue accepted: task_state unrescuing.
class InstanceUnrescueRequested(TypedDict):
    pass


# Nova's migration record: one move of an instance between hosts.
class Migration(TypedDict):
    migration_id: str
    kind: str
    source_host: str
    source_node: str
    dest_host: str | None
    dest_node: str | None
    old_flavor: Flavor
    new_flavor: Flavor
    requested_host: str | None
    old_vm_state: str
    status: str


# The conductor took the request and opened its migration record; the scheduler picks the
# destination next.
class InstanceMigrationStarted(TypedDict):
    migration: Migration


# The scheduler's destination for the migration.
class InstanceMigrationScheduled(TypedDict):
    migration_id: str
    host: str
    node: str


# The destination host holds a claim for the migration (the source keeps its own until
# confirm or revert).
class InstanceMigrationClaimed(TypedDict):
    migration_id: str
    host: str
    node: str
    instances_path: str


# The migration stopped; what it took on the destination is released. rolled_back: the
# instance is as before the request; otherwise it is in error.
class InstanceMigrationFailed(TypedDict):
    migration_id: str
    stage: str
    reason: str
    source_host: str
    dest_host: str | None
    rolled_back: bool


# The source host is powering the guest off and copying its disks: task_state
# resize_migrating.
class InstanceResizeMigrating(TypedDict):
    migration_id: str
    host: str


# The disks are on the destination: task_state resize_migrated.
class InstanceResizeMigrated(TypedDict):
    migration_id: str
    host: str


# The destination is defining the guest with the new flavor: task_state resize_finish.
class InstanceResizeFinishing(TypedDict):
    migration_id: str
    host: str


# The guest runs on the destination with the new flavor: vm_state resized (VERIFY_RESIZE)
# until confirm or revert.
class InstanceResized(TypedDict):
    migration_id: str
    host: str
    node: str
    power_state: int
    disks: list[Disk]


# The source host released the old guest: vm_state active (or stopped).
class InstanceResizeConfirmed(TypedDict):
    migration_id: str
    host: str


# The guest is back on the source with the old flavor; the destination released its claim.
class InstanceResizeReverted(TypedDict):
    migration_id: str
    host: str
    node: str
    power_state: int
    disks: list[Disk]
    dest_host: str


# The guest runs on the destination (addresses kept): host changes, task_state None; the
# source is cleaned next.
class InstanceLiveMigrated(TypedDict):
    migration_id: str
    host: str
    node: str
    power_state: int
    disks: list[Disk]
    source_host: str


# The source host is copying the guest to the destination while it runs (Nova's
# compute_live_migration): migration running.
class InstanceLiveMigrationStarted(TypedDict):
    migration_id: str
    host: str


# The old host destroyed the guest's domain and disks and released its claim (after a live
# migration, or when an evacuated host came back).
class InstanceMigrationSourceCleaned(TypedDict):
    migration_id: str
    host: str


# Evacuate: the destination prepares new disks from the image: task_state
# rebuild_block_device_mapping.
class InstanceRebuildBlockDeviceMapping(TypedDict):
    migration_id: str
    host: str


# Evacuate: the destination defines and starts the guest: task_state rebuild_spawning.
class InstanceRebuildSpawning(TypedDict):
    migration_id: str
    host: str


# Rebuilt on the destination after its host was lost: vm_state active (stopped if it was).
class InstanceEvacuated(TypedDict):
    migration_id: str
    host: str
    node: str
    power_state: int
    disks: list[Disk]


# The guest booted from a rescue disk, its own disk attached second: vm_state rescued.
class InstanceRescued(TypedDict):
    host: str
    power_state: int


# The guest booted from its own disk again: vm_state active.
class InstanceUnrescued(TypedDict):
    host: str
    power_state: int


# Command to the network role, keyed by network id: one port on that network for an
# instance.
class AllocatePorts(TypedDict):
    instance_uuid: str
    host: str
    attempt: int
    network: NetworkToAttach
    slot: int


# Command to the network role, keyed by network id: free the instance's ports on it (build
# failure or delete).
class ReleasePorts(TypedDict):
    instance_uuid: str
    network_id: str
    reason: str
    attempt: int


# Fact keyed by network id: this address and MAC now belong to this port.
class IpAllocated(TypedDict):
    network_id: str
    instance_uuid: str
    port_id: str
    ip_address: str
    mac_address: str
    host: str
    attempt: int
    slot: int


# Fact keyed by network id: the address is free again.
class IpReleased(TypedDict):
    network_id: str
    instance_uuid: str
    port_id: str
    ip_address: str


# Fact keyed by network id: no address could be given (pool exhausted, unknown network).
class IpAllocationFailed(TypedDict):
    network_id: str
    instance_uuid: str
    reason: str


# Reply to the compute agent's topic: the instance's ports are ready (Nova's network-vif-
# plugged).
class PortsAllocated(TypedDict):
    instance_uuid: str
    host: str
    attempt: int
    ports: list[Port]
    slot: int


# Reply to the compute agent's topic: no port could be made; nothing stays allocated.
class PortsAllocationFailed(TypedDict):
    instance_uuid: str
    host: str
    attempt: int
    reason: str


# The build that asked for the volume, to answer on its host's topic.
class BuildRef(TypedDict):
    instance_uuid: str
    host: str
    attempt: int


# A new volume, status creating: from the Block Storage API, or from a compute host building
# a server from an image onto a volume (for_build).
class VolumeRequested(TypedDict):
    volume_id: str
    project_id: str
    user_id: str
    name: str | None
    description: str | None
    size_gb: int
    volume_type: str
    availability_zone: str
    image_id: str | None
    metadata: dict[str, str]
    for_build: BuildRef | None


# How a host reaches a volume (Cinder's connection_info): a file, for the file backend.
class VolumeConnection(TypedDict):
    driver_volume_type: str
    path: str
    format: str


# The backend made the volume: status available.
class VolumeCreated(TypedDict):
    volume_id: str
    size_gb: int
    bootable: bool
    connection: VolumeConnection
    backend: str


# The backend could not make the volume: status error.
class VolumeCreateFailed(TypedDict):
    volume_id: str
    reason: str


# Status deleting (only from available or error).
class VolumeDeleteRequested(TypedDict):
    volume_id: str


# The backend removed the volume; it is gone.
class VolumeDeleted(TypedDict):
    volume_id: str


# Status error_deleting.
class VolumeDeleteFailed(TypedDict):
    volume_id: str
    reason: str


# An attachment is made for a server (Cinder's attachment_create): status reserved.
class VolumeReserved(TypedDict):
    volume_id: str
    attachment_id: str
    instance_uuid: str


# The server's host connects the volume: status attaching.
class VolumeAttaching(TypedDict):
    volume_id: str
    attachment_id: str
    instance_uuid: str
    host: str


# The volume is in the server's domain: status in-use.
class VolumeAttached(TypedDict):
    volume_id: str
    attachment_id: str
    instance_uuid: str
    host: str
    device: str


# The attach did not happen: the attachment is gone, status available.
class VolumeAttachFailed(TypedDict):
    volume_id: str
    attachment_id: str
    instance_uuid: str
    reason: str


# A detach was asked for: status detaching.
class VolumeDetaching(TypedDict):
    volume_id: str
    attachment_id: str
    instance_uuid: str


# The volume left the server's domain: the attachment is gone, status available.
class VolumeDetached(TypedDict):
    volume_id: str
    attachment_id: str
    instance_uuid: str
    host: str | None


# Command to the server's compute host (its topic): hot-plug the volume.
class AttachVolume(TypedDict):
    instance_uuid: str
    host: str
    volume_id: str
    attachment_id: str
    connection: VolumeConnection
    size_gb: int
    device: str | None


# Command to the server's compute host: unplug the volume.
class DetachVolume(TypedDict):
    instance_uuid: str
    host: str
    volume_id: str
    attachment_id: str


# The volume role's answer to a build's VolumeRequested, on the host's topic.
class BuildVolumeReady(TypedDict):
    instance_uuid: str
    host: str
    attempt: int
    volume_id: str
    connection: VolumeConnection
    size_gb: int


# The volume a build asked for could not be made (or is gone).
class BuildVolumeFailed(TypedDict):
    instance_uuid: str
    host: str
    attempt: int
    volume_id: str
    reason: str
