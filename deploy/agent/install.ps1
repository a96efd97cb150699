<#
.SYNOPSIS
Install (or upgrade in place) the Helpline agent on a Windows PC, enroll it, and start its scheduled task.

.DESCRIPTION
The agent goes into its own virtual environment under -Prefix (default %ProgramFiles%\Helpline); its
identity and state into -StateDir (default %ProgramData%\Helpline, readable by SYSTEM and Administrators
only). restic comes from winget or Chocolatey when it is missing. The enrollment token is read from
standard input (-TokenFile -), a file, or HELPLINE_ENROLL_TOKEN, and is handed to `helpline agent enroll`
on its standard input: never on a command line, where other users of the PC could read it. Running the
script again upgrades the agent in place and keeps its identity: a PC already enrolled with the server is
not enrolled again (no token needed, no second agent) unless -Reenroll is given.

.EXAMPLE
Get-Content token.txt | powershell -ExecutionPolicy Bypass -File install.ps1 -Server https://help.example.com -TokenFile -
#>
[CmdletBinding()]
param(
    [string]$Server = "",
    [string]$TokenFile = "",
    [string]$ServerKey = "",
    [switch]$Reenroll,
    [string]$Source = "",
    [string]$Prefix = (Join-Path $env:ProgramFiles "Helpline"),
    [string]$StateDir = (Join-Path $env:ProgramData "Helpline"),
    [string]$Python = "",
    [switch]$NoStart
)
$ErrorActionPreference = "Stop"
$TaskName = "Helpline Agent"
$TaskPath = "\Helpline\"
$Here = Split-Path -Parent $MyInvocation.MyCommand.Path
$Venv = Join-Path $Prefix "venv"
$Helpline = Join-Path $Venv "Scripts\helpline.exe"

function Say([string]$Message) { [Console]::Error.WriteLine("helpline-install: $Message") }
function Fail([string]$Message) { Say "error: $Message"; exit 1 }

# --- the Python that makes the venv: 3.11 or newer ----------------------------------------------------------
function Test-Python([string[]]$Command) {
    $exe, $rest = $Command
    & $exe @rest -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>$null
    return $LASTEXITCODE -eq 0
}
if ($Python) {
    $PythonCommand = @($Python)
    if (-not (Test-Python $PythonCommand)) { Fail "$Python is not Python 3.11 or newer" }
} elseif ((Get-Command py.exe -ErrorAction SilentlyContinue) -and (Test-Python @("py.exe", "-3"))) {
    $PythonCommand = @("py.exe", "-3")
} elseif ((Get-Command python.exe -ErrorAction SilentlyContinue) -and (Test-Python @("python.exe"))) {
    $PythonCommand = @("python.exe")
} else {
    Fail "Python 3.11 or newer is needed (winget install Python.Python.3.12), or give one with -Python"
}
$PyExe, $PyArgs = $PythonCommand

# --- enrolled already? Then no token is needed and none is spent ------------------------------------------
function Test-Enrolled([string]$Url) {
    $file = Join-Path $StateDir "agent.json"
    if (-not (Test-Path $file)) { return $false }
    try { $state = Get-Content -Raw $file | ConvertFrom-Json } catch { return $false }
    if (-not $state.enrolled) { return $false }
    return (-not $Url) -or ($state.server_url.TrimEnd("/") -eq $Url.Trim().TrimEnd("/"))
}
$Enroll = $Reenroll -or -not (Test-Enrolled $Server)
$Token = $null
if ($Enroll) {
    if (-not $Server) { Fail "this PC is not enrolled yet: give -Server URL" }
    if ($TokenFile -eq "-") {
        $Token = [Console]::In.ReadLine()
    } elseif ($TokenFile) {
        if (-not (Test-Path $TokenFile)) { Fail "cannot read the token file $TokenFile" }
        $Token = Get-Content -TotalCount 1 $TokenFile
    } else {
        $Token = $env:HELPLINE_ENROLL_TOKEN
    }
    if (-not $Token -or -not $Token.Trim()) {
        Fail "no enrollment token: pipe it in with -TokenFile -, or use -TokenFile FILE or HELPLINE_ENROLL_TOKEN"
    }
} else {
    Say "this PC is enrolled already; upgrading in place and keeping its identity"
}
Remove-Item Env:HELPLINE_ENROLL_TOKEN -ErrorAction SilentlyContinue  # pip and winget run without it

# --- restic, from winget or Chocolatey where it is missing -----------------------------------------------
if (Get-Command restic.exe -ErrorAction SilentlyContinue) {
    Say "restic is installed already"
} elseif (Get-Command winget.exe -ErrorAction SilentlyContinue) {
    Say "installing restic with winget"
    & winget.exe install --id restic.restic --exact --silent --accept-source-agreements --accept-package-agreements
    if ($LASTEXITCODE -ne 0) { Fail "winget could not install restic" }
} elseif (Get-Command choco.exe -ErrorAction SilentlyContinue) {
    Say "installing restic with Chocolatey"
    & choco.exe install restic -y --no-progress
    if ($LASTEXITCODE -ne 0) { Fail "Chocolatey could not install restic" }
} else {
    Fail "restic is missing and neither winget nor Chocolatey is installed: install restic first"
}

# --- the agent in its own virtual environment; the running task is stopped first (Windows locks its files) --
$Task = Get-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -ErrorAction SilentlyContinue
if ($Task) { Stop-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath }
if (-not $Source) {
    $Tree = Resolve-Path (Join-Path $Here "..\..") -ErrorAction SilentlyContinue
    if ($Tree -and (Test-Path (Join-Path $Tree "pyproject.toml"))) { $Source = "$Tree" } else { $Source = "helpline" }
}
New-Item -ItemType Directory -Force -Path $Prefix | Out-Null
if (Test-Path (Join-Path $Venv "Scripts\python.exe")) {
    Say "upgrading the agent in $Venv from $Source"
} else {
    Say "installing the agent into $Venv from $Source"
    & $PyExe @PyArgs -m venv $Venv
    if ($LASTEXITCODE -ne 0) { Fail "could not make the virtual environment $Venv" }
}
$VenvPython = Join-Path $Venv "Scripts\python.exe"
& $VenvPython -m pip install --quiet --disable-pip-version-check --upgrade $Source
if ($LASTEXITCODE -ne 0) { Fail "pip could not install $Source" }
& $VenvPython -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps $Source
if ($LASTEXITCODE -ne 0) { Fail "pip could not install $Source" }

# --- the identity: a folder for SYSTEM and Administrators only, then enrollment ---------------------------
New-Item -ItemType Directory -Force -Path $StateDir | Out-Null
& icacls.exe $StateDir /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)F" "*S-1-5-32-544:(OI)(CI)F" | Out-Null
if ($LASTEXITCODE -ne 0) { Fail "could not restrict $StateDir to SYSTEM and Administrators" }
if ($Enroll) {
    $EnrollArgs = @("agent", "enroll", $Server, "-")
    if ($ServerKey) { $EnrollArgs += @("--server-key", $ServerKey) }
    $env:HELPLINE_AGENT_DIR = $StateDir
    try {
        # The token goes down helpline's standard input, never into its arguments.
        $Token | & $Helpline @EnrollArgs
        if ($LASTEXITCODE -ne 0) { Fail "enrollment failed (see above)" }
    } finally {
        Remove-Item Env:HELPLINE_AGENT_DIR -ErrorAction SilentlyContinue
        $Token = $null
    }
}

# --- the scheduled task, with this installation's real paths ---------------------------------------------
$Launcher = Join-Path $Prefix "helpline-agent.cmd"
Set-Content -Encoding ASCII -Path $Launcher -Value @(
    "@echo off",
    "rem Written by install.ps1: the Helpline agent's scheduled task runs this.",
    "set ""HELPLINE_AGENT_DIR=$StateDir""",
    "set ""NO_COLOR=1""",
    """$Helpline"" agent run"
)
$Xml = (Get-Content -Raw (Join-Path $Here "windows\helpline-agent-task.xml")).Replace(
    "@PREFIX@", [System.Security.SecurityElement]::Escape($Prefix))
Register-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Xml $Xml -Force | Out-Null
Say "registered the scheduled task $TaskPath$TaskName"
if (-not $NoStart) {
    Start-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath
    Say "the agent is running (Get-ScheduledTask -TaskPath '$TaskPath')"
} else {
    Say "not started (-NoStart)"
}
Say "done: the Helpline agent is installed in $Prefix"
