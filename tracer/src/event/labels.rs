//! Names of a container cgroup (Kubernetes, container runtime, systemd unit).
use serde::Serialize;

/// JSON `labels`: empty fields are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Labels {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The pod's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The pod's Kubernetes namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The container's name in its pod spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl Labels {
    /// `namespace/pod/container` as far as the names are known (`None` without a pod name),
    /// for people: in lines and the live view, through term::escape like every name.
    pub fn workload(&self) -> Option<String> {
        let pod = self.pod.as_deref()?;
        let mut name = match self.namespace.as_deref() {
            Some(namespace) => format!("{namespace}/{pod}"),
            None => pod.to_owned(),
        };
        if let Some(container) = self.container.as_deref() {
            name.push('/');
            name.push_str(container);
        }
        Some(name)
    }
}
