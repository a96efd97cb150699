<#
.SYNOPSIS
Remove the Helpline agent from a Windows PC: its scheduled task, its virtual environment and, unless
-KeepState, its identity and state.

.DESCRIPTION
The server keeps the agent's record, tickets and snapshots; an administrator retires the PC there.

.EXAMPLE
powershell -ExecutionPolicy Bypass -File uninstall.ps1 -KeepState
#>
[CmdletBinding()]
param(
    [switch]$KeepState,
    [string]$Prefix = (Join-Path $env:ProgramFiles "Helpline"),
    [string]$StateDir = (Join-Path $env:ProgramData "Helpline")
)
$ErrorActionPreference = "Stop"
$TaskName = "Helpline Agent"
$TaskPath = "\Helpline\"
function Say([string]$Message) { [Console]::Error.WriteLine("helpline-uninstall: $Message") }

if ((Test-Path $Prefix) -and -not (Test-Path (Join-Path $Prefix "venv"))) {
    Say "error: $Prefix does not look like a Helpline agent installation (no venv in it); nothing removed"
    exit 1
}
$Task = Get-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -ErrorAction SilentlyContinue
if ($Task) {
    Stop-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath
    Unregister-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Confirm:$false
    Say "stopped and removed the scheduled task"
}
if (Test-Path $Prefix) { Remove-Item -Recurse -Force $Prefix }
Say "removed $Prefix"
if ($KeepState) {
    Say "kept the agent's identity and state in $StateDir"
} elseif (Test-Path $StateDir) {
    Remove-Item -Recurse -Force $StateDir
    Say "removed the agent's identity and state ($StateDir); an administrator retires the PC on the server"
}
