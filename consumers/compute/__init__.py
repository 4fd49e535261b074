"""nova-compute: one agent per host (`novalog run compute` with NOVALOG_COMPUTE_HOST).

- `resource_tracker.py`: atomic claims against totals and allocation ratios
- `image_cache.py`: base-image cache, qcow2 overlays, ephemeral and swap disks
- `driver.py`: libvirt (test driver by default; QEMU by configuration)
- `manager.py`: the build steps and their clean-up
- `role.py`: configuration and the consume loop on `novalog.compute.<host>`
"""
