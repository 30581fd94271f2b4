//! `hop kube exec`: kubectl exec with the context `hop kube login` wrote, so that a user need
//! not know its name. The work is kubectl's: this builds its command line and runs it in place
//! of `hop` (its exit status is the command's).

use std::os::unix::process::CommandExt;

use anyhow::bail;

use super::certificates::{self, KubeLogin};
use super::kubeconfig;
use crate::cli::KubeExecArgs;
use crate::profile::{self, Paths};

/// kubectl's arguments for `a` on the login `l`.
pub fn kubectl_args(l: &KubeLogin, a: &KubeExecArgs) -> Vec<String> {
    let mut args = vec![
        "--kubeconfig".to_string(),
        l.kubeconfig.display().to_string(),
        "--context".into(),
        l.context.clone(),
        "exec".into(),
    ];
    if a.stdin {
        args.push("-i".into());
    }
    if a.tty {
        args.push("-t".into());
    }
    if let Some(c) = &a.container {
        args.extend(["-c".into(), c.clone()]);
    }
    if let Some(n) = &a.namespace {
        args.extend(["-n".into(), n.clone()]);
    }
    args.push(a.pod.clone());
    args.push("--".into());
    args.extend(a.command.iter().cloned());
    args
}

/// The login `name` names; else the one whose context is current; else the only one.
fn pick(paths: &Paths, name: Option<&str>) -> anyhow::Result<KubeLogin> {
    if let Some(n) = name {
        return certificates::saved(paths, n);
    }
    let all = certificates::all_saved(paths);
    if let [one] = all.as_slice() {
        return Ok(one.clone());
    }
    if all.is_empty() {
        bail!("not logged in to any Kubernetes cluster: run `hop kube login NAME`");
    }
    let current = kubeconfig::default_path()
        .ok()
        .and_then(|p| kubeconfig::read_file(&p).ok())
        .and_then(|doc| kubeconfig::current_context(&doc).map(str::to_string));
    if let Some(l) = all.iter().find(|l| Some(&l.context) == current.as_ref()) {
        return Ok(l.clone());
    }
    bail!(
        "logged in to several Kubernetes clusters ({}); name one with --kube-cluster",
        all.iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Runs kubectl exec in place of this process; returns only when kubectl could not be run.
pub fn run(a: KubeExecArgs) -> anyhow::Result<()> {
    let (_, paths) = profile::current_profile(&profile::hop_home()?)?;
    let l = pick(&paths, a.kube_cluster.as_deref())?;
    if l.kubeconfig.as_os_str().is_empty() {
        bail!(
            "the login to Kubernetes cluster {} wrote no kubeconfig: run `hop kube login {}`",
            l.name,
            l.name
        );
    }
    let e = std::process::Command::new("kubectl")
        .args(kubectl_args(&l, &a))
        .exec();
    if e.kind() == std::io::ErrorKind::NotFound {
        bail!(
            "kubectl is not installed (not found on PATH): `hop kube exec` runs it; install kubectl (https://kubernetes.io/docs/tasks/tools/, or Debian's kubernetes-client)"
        );
    }
    bail!("cannot run kubectl: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_gets_our_kubeconfig_context_and_the_flags() {
        let l = KubeLogin {
            name: "dev".into(),
            context: "c1-dev".into(),
            proxy_addr: String::new(),
            tls_server_name: String::new(),
            trusted_cas_pem: String::new(),
            expires_unix: 0,
            kubeconfig: "/home/u/.kube/config".into(),
            session_mfa: false,
        };
        let mut a = KubeExecArgs {
            pod: "web-1".into(),
            container: None,
            namespace: None,
            stdin: false,
            tty: false,
            kube_cluster: None,
            command: vec!["uname".into(), "-a".into()],
        };
        assert_eq!(
            kubectl_args(&l, &a).join(" "),
            "--kubeconfig /home/u/.kube/config --context c1-dev exec web-1 -- uname -a"
        );
        a.stdin = true;
        a.tty = true;
        a.container = Some("main".into());
        a.namespace = Some("kube-system".into());
        a.command = vec!["sh".into(), "-c".into(), "echo --x".into()];
        assert_eq!(
            kubectl_args(&l, &a),
            [
                "--kubeconfig",
                "/home/u/.kube/config",
                "--context",
                "c1-dev",
                "exec",
                "-i",
                "-t",
                "-c",
                "main",
                "-n",
                "kube-system",
                "web-1",
                "--",
                "sh",
                "-c",
                "echo --x"
            ]
        );
    }
}
