"""The kernel-log parser on other spellings of the same events: OOM kills of Linux 3.x to 6.x,
segfaults and traps with and without a module or a "likely on CPU" suffix, I/O and driver errors of
several drivers, under every prefix dmesg, journalctl and a syslog file put before a message
(fixtures/variants, written from the documented formats), and the triage lines they give."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.bundle.summary import build_summary
from agent.diagnostics.collectors.kernel import driver_of, parse_kernel_log, split_kernel_line
from agent.diagnostics.model import CollectionReport, CollectorResult, CollectorStatus

VARIANTS = Path(__file__).parent / "fixtures" / "variants"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
OOM_LINE = "Out of memory: Killed process 2345 (firefox) total-vm:4123456kB, anon-rss:3012345kB, file-rss:0kB"


def triage(kernel_facts: dict) -> list[str]:
    result = CollectorResult("kernel", "kernel", CollectorStatus.OK, 0.1, [], {"source": "dmesg", **kernel_facts})
    return build_summary(CollectionReport(NOW, NOW, "linux", 20.0, [result]))["attention"]


@pytest.mark.parametrize("prefix, time", [
    ("[ 2234.567890] ", None),                                        # dmesg
    ("[  +0.000123] ", None),                                          # dmesg -d
    ("<    0.000123> ", None),                                         # dmesg -d, older util-linux
    ("[Dec 1 10:00] ", None),                                          # dmesg --time-format reltime
    ("[Tue Dec  1 10:00:00 2026] ", "2026-12-01T10:00:00"),            # dmesg -T: local time, no zone
    ("kern  :err   : [ 2234.567890] ", None),                          # dmesg -x
    ("kern  :err   : [Tue Dec  1 10:00:00 2026] ", "2026-12-01T10:00:00"),
    ("<3>[ 2234.567890] ", None),                                      # dmesg -r
    ("2026-12-01T10:00:00,123456+00:00 ", "2026-12-01T10:00:00+00:00"),  # dmesg --time-format iso
    ("2026-12-01T10:00:00+0100 pc01 kernel: ", "2026-12-01T09:00:00+00:00"),          # journalctl short-iso
    ("2026-12-01T10:00:00.123456+01:00 pc01 kernel: ", "2026-12-01T09:00:00+00:00"),  # short-iso-precise
    ("Dec  1 10:00:00 pc01 kernel: ", None),                           # journalctl short (no year)
    ("Dec 01 10:00:00.123456 pc01 kernel: ", None),                    # short-precise
    ("Tue 2026-12-01 10:00:00 UTC pc01 kernel: ", "2026-12-01T10:00:00+00:00"),      # short-full
    ("Tue 2026-12-01 10:00:00 CET pc01 kernel: ", "2026-12-01T10:00:00"),            # short-full, local zone
    ("[  123.456789] pc01 kernel: ", None),                            # short-monotonic
    ("Dec  1 10:00:00 pc01 kernel: [ 5000.123456] ", None),            # rsyslog keeps the kernel's uptime
])
def test_every_prefix_leaves_the_bare_message_and_its_time(prefix, time):
    assert split_kernel_line(prefix + OOM_LINE) == (time, OOM_LINE)
    facts = parse_kernel_log([prefix + OOM_LINE])
    assert facts["oom_kills"] == [{"time": time, "pid": 2345, "process": "firefox", "rss_kb": 3012345,
                                   "cgroup": False}]


@pytest.mark.parametrize("lines, pid, process, cgroup", [
    (["Out of memory: Kill process 1234 (chrome) score 912 or sacrifice child",                # 3.x-4.x
      "Killed process 1234 (chrome) total-vm:4123456kB, anon-rss:2012345kB, file-rss:0kB"], 1234, "chrome", False),
    (["Out of memory (oom_kill_allocating_task): Kill process 77 (gimp) score 0 or sacrifice child"], 77, "gimp", False),
    (["Memory cgroup out of memory: Kill process 3457 (node) score 1000 or sacrifice child"], 3457, "node", True),
    (["oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
      "task_memcg=/user.slice,task=Web Content,pid=4567,uid=1000",                              # 5.x
      "Out of memory: Killed process 4567 (Web Content) total-vm:1kB, anon-rss:2kB, file-rss:0kB",
      "oom_reaper: reaped process 4567 (Web Content), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB"],
     4567, "Web Content", False),
    (["oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,"
      "task_memcg=/a/b,task=java,pid=99,uid=0"], 99, "java", True),                             # summary alone
    (["oom_reaper: reaped process 31 (soffice.bin), now anon-rss:0kB, file-rss:0kB"], 31, "soffice.bin", False),
])
def test_oom_kills_of_every_kernel_count_once_with_their_process(lines, pid, process, cgroup):
    facts = parse_kernel_log(lines)
    assert facts["oom_kill_count"] == 1
    assert (facts["oom_kills"][0]["pid"], facts["oom_kills"][0]["process"], facts["oom_kills"][0]["cgroup"]) == \
        (pid, process, cgroup)
    assert triage(facts)[0] == f"Out of memory: the kernel killed {process} (pid {pid})"


@pytest.mark.parametrize("line, process, pid, signal, module", [
    ("thunderbird[5678]: segfault at 0 ip 00007f0000000000 sp 00007ffd00000000 error 4 in "
     "libxul.so[7f0000000000+5000000] likely on CPU 2 (core 2, socket 0)", "thunderbird", 5678, "SIGSEGV", "libxul.so"),
    ("evince[6789]: segfault at 8 ip 000055d0 sp 00007ffc error 6", "evince", 6789, "SIGSEGV", None),
    ("Web Content[8200]: segfault at 10 ip 00007f00 sp 00007ffd error 4 in libxul.so[7f00+5c00000]",
     "Web Content", 8200, "SIGSEGV", "libxul.so"),
    ("python3[1111]: segfault at 0 ip 0 sp 0 error 4 in python3.12[400000+1000]", "python3", 1111, "SIGSEGV",
     "python3.12"),
    ("traps: gjs[7890] general protection fault ip:7f sp:7ffc error:0 in libmozjs-115.so[7f+100]", "gjs", 7890,
     "SIGSEGV", "libmozjs-115.so"),
    ("traps: gjs[7890] general protection ip:7f sp:7ffc error:0", "gjs", 7890, "SIGSEGV", None),
    ("traps: calc[7891] trap divide error ip:55 sp:7ffc error:0 in calc[55+1000]", "calc", 7891, "SIGFPE", "calc"),
    ("traps: app[7892] trap invalid opcode ip:55 sp:7ffc error:0 in libfoo.so[55+1000]", "app", 7892, "SIGILL",
     "libfoo.so"),
    ("traps: app[7893] trap stack segment ip:55 sp:7ffc error:0 in libfoo.so[55+1000]", "app", 7893, "SIGBUS",
     "libfoo.so"),
    ("traps: app[7894] trap int3 ip:55 sp:7ffc error:0 in libglib-2.0.so.0[55+1000]", "app", 7894, "SIGTRAP",
     "libglib-2.0.so.0"),
    ("a.out[2222]: potentially unexpected fatal signal 6.", "a.out", 2222, "SIGABRT", None),
    ("zoom[3030]: unhandled level 2 translation fault (11) at 0x00000008, esr 0x92000006, in "
     "libQt5Core.so.5[ffff8000+400000]", "zoom", 3030, "SIGSEGV", "libQt5Core.so.5"),                # arm64
])
def test_crashes_keep_the_process_the_signal_name_and_the_module(line, process, pid, signal, module):
    facts = parse_kernel_log(["[  100.000001] " + line])
    crash = facts["segfaults"][0]
    assert (crash["process"], crash["pid"], crash["signal"], crash["module"]) == (process, pid, signal, module)
    where = f" in {module}" if module else ""
    assert f"{process} (pid {pid}) crashed with {signal}{where}" in triage(facts)


@pytest.mark.parametrize("line, device", [
    ("blk_update_request: I/O error, dev sda, sector 123456 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "sda"),
    ("print_req_error: I/O error, dev sdb, sector 2048", "sdb"),
    ("I/O error, dev nvme0n1, sector 0 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2", "nvme0n1"),
    ("blk_update_request: critical medium error, dev sdb, sector 1234 op 0x0:(READ)", "sdb"),
    ("critical target error, dev sdd, sector 8", "sdd"),
    ("Buffer I/O error on dev dm-1, logical block 0, async page read", "dm-1"),
    ("Buffer I/O error on device sdc1, logical block 12", "sdc1"),
    ("EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0", "sda1"),
    ("EXT4-fs error (device dm-0) in ext4_reserve_inode_write:5742: IO failure", "dm-0"),
    ("BTRFS error (device nvme0n1p2): bdev /dev/nvme0n1p2 errs: wr 0, rd 1, flush 0, corrupt 0, gen 0", "nvme0n1p2"),
    ("BTRFS error (device dm-0: state EA): bdev /dev/mapper/root errs: wr 1, rd 0", "dm-0"),
    ("XFS (dm-2): metadata I/O error: block 0x1a2b (\"xfs_trans_read_buf_map\") error 5 numblks 8", "dm-2"),
    ("XFS (sda3): Corruption detected. Unmount and run xfs_repair", "sda3"),
    ("sd 2:0:0:0: [sdc] tag#3 Sense Key : Medium Error [current]", "sdc"),
    ("sd 2:0:0:0: [sdc] tag#3 Add. Sense: Unrecovered read error - auto reallocate failed", "sdc"),
    ("ata1.00: failed command: READ FPDMA QUEUED", "ata1.00"),
    ("ata3.00: exception Emask 0x10 SAct 0x0 SErr 0x400100 action 0x6 frozen", "ata3.00"),
    ("ata3.00: status: { DRDY ERR }", "ata3.00"),
    ("ata3.00: error: { UNC }", "ata3.00"),
    ("nvme nvme0: I/O 12 QID 3 timeout, aborting", "nvme0"),
    ("nvme nvme0: I/O tag 12 (100c) opcode 0x2 (I/O Cmd) QID 3 timeout, aborting", "nvme0"),
    ("nvme0n1: I/O Cmd(0x2) @ LBA 123456, 8 blocks, I/O Error (sct 0x2 / sc 0x81) DNR", "nvme0n1"),
    ("nvme nvme1: controller is down; will reset: CSTS=0xffffffff, PCI_STATUS=0xffff", "nvme1"),
    ("mmcblk0: error -110 transferring data, sector 4096, nr 8, cmd response 0x900, card status 0xc00", "mmcblk0"),
])
def test_io_errors_name_their_device(line, device):
    facts = parse_kernel_log(["[    5.000000] " + line])
    assert facts["io_error_devices"] == {device: 1}
    assert f"1 disk I/O error(s) in the kernel log ({device})" in triage(facts)


@pytest.mark.parametrize("line, driver", [
    ("i915 0000:00:02.0: [drm] *ERROR* GPU HANG: ecode 9:1:85dffffb, in Xorg [1234]", "i915"),
    ("i915 0000:00:02.0: [drm] GPU HANG: ecode 9:1:85dffffb, in gnome-shell [1402]", "i915"),
    ("[drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx timeout, signaled seq=123, emitted seq=125", "amdgpu"),
    ("amdgpu 0000:03:00.0: amdgpu: GPU reset begin!", "amdgpu"),
    ("[drm:radeon_cs_ioctl [radeon]] *ERROR* Failed to parse relocation -35!", "radeon"),
    ("nouveau 0000:01:00.0: fifo: fault 00 [READ] at 0000000000000000 engine 00 [GR] client 04", "nouveau"),
    ("nouveau 0000:01:00.0: gr: TRAP ch 2 [007f9c9000 Xorg[1055]]", "nouveau"),
    ("NVRM: Xid (PCI:0000:01:00): 79, pid=1234, GPU has fallen off the bus.", "NVRM"),
    ("iwlwifi 0000:00:14.3: Microcode SW error detected. Restarting 0x2000000.", "iwlwifi"),
    ("iwlwifi 0000:03:00.0: Failed to start INIT ucode: -110", "iwlwifi"),
    ("iwlwifi 0000:00:14.3: Direct firmware load for iwlwifi-so-a0-gf-a0-86.ucode failed with error -2", "iwlwifi"),
    ("usb 1-1: device descriptor read/64, error -71", "usb 1-1"),
    ("usb 3-1.2: device not accepting address 5, error -71", "usb 3-1.2"),
    ("usb 2-1.4: unable to enumerate USB device", "usb 2-1.4"),
])
def test_driver_errors_are_counted_and_named_by_driver(line, driver):
    facts = parse_kernel_log(["[    6.000000] " + line])
    assert facts["driver_error_count"] == 1 and facts["io_error_count"] == 0
    assert driver_of(line) == driver and facts["driver_error_sources"] == {driver: 1}
    assert f"1 driver error(s) in the kernel log ({driver})" in triage(facts)


HEALTHY = [
    "[    0.000000] Linux version 6.5.0-14-generic (buildd@lcy02) #14-Ubuntu SMP",
    "[    1.000000] systemd[1]: Started systemd-oomd.service - Userspace Out-Of-Memory (OOM) Killer.",
    "[    2.000000] firefox invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0",
    "[    2.000001] [ pid ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    "[    2.000002] [   1234]  1000  1234     1000      200        0        0             0 firefox",
    "[    2.500000] Memory cgroup stats for /user.slice/user-1000.slice:",
    "[    3.000000] audit: type=1400 apparmor=\"DENIED\" operation=\"open\" profile=\"snap.firefox\"",
    "[    4.000000] EXT4-fs (sda1): mounted filesystem with ordered data mode. Opts: errors=remount-ro",
    "[    4.100000] EXT4-fs (sda1): re-mounted. Opts: errors=remount-ro",
    "[    5.000000] usb 1-1: new high-speed USB device number 2 using xhci_hcd",
    "[    5.100000] ata1: SATA link up 6.0 Gbps (SStatus 133 SControl 300)",
    "[    5.200000] nvme nvme0: 8/0/0 default/read/poll queues",
    "[    5.300000] sd 0:0:0:0: [sda] Attached SCSI disk",
    "[    6.000000] i915 0000:00:02.0: [drm] GuC firmware i915/tgl_guc_70.bin version 70.1.1",
    "[    6.100000] iwlwifi 0000:00:14.3: loaded firmware version 77.0 op_mode iwlmvm",
    "[    7.000000] test_segfault_handler: all 12 tests passed",
    "[    8.000000] amdgpu 0000:03:00.0: amdgpu: ring gfx uses VM inv eng 0 on hub 0",
]


@pytest.mark.parametrize("fixture, kills, crashes, devices, drivers, first_time", [
    ("dmesg-T-kernel-4x.txt", [(4711, "chrome", 3249380)], [("evince", "SIGSEGV"), ("soffice.bin", "SIGFPE")],
     {"sdb": 1, "sdb1": 1}, {"usb 2-1.4": 2}, "2026-12-01T09:58:12"),
    ("journal-short-precise-kernel-6x.txt", [(8123, "Web Content", 1523400)], [("Web Content", "SIGSEGV")],
     {"nvme0": 1, "nvme0n1": 1, "dm-0": 1}, {"i915": 1, "iwlwifi": 1}, None),
    ("syslog-kern-rhel7.txt", [(3412, "java", 6012344)], [("gnome-shell", "SIGSEGV")],
     {"sdc": 2, "dm-2": 1, "ata3.00": 2}, {"amdgpu": 1}, None),
])
def test_whole_logs_of_other_kernels_and_tools(fixture, kills, crashes, devices, drivers, first_time):
    """Each log, with healthy lines that look like trouble mixed in, gives exactly its problems."""
    facts = parse_kernel_log((VARIANTS / fixture).read_text().splitlines() + HEALTHY)
    assert [(k["pid"], k["process"], k["rss_kb"]) for k in facts["oom_kills"]] == kills
    assert facts["oom_kills"][0]["time"] == first_time
    assert [(c["process"], c["signal"]) for c in facts["segfaults"]] == crashes
    assert facts["io_error_devices"] == devices
    assert facts["driver_error_sources"] == drivers
    assert facts["driver_error_count"] == sum(drivers.values())
    lines = triage(facts)
    assert lines[0].startswith(f"Out of memory: the kernel killed {kills[0][1]} (pid {kills[0][0]})")
    assert sum(line.startswith("Out of memory") for line in lines) == 1
