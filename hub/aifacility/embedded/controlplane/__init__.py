"""The real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and the
Kueue controller manager: built once per machine from their Go modules (`build`), run by `ControlPlane`."""
