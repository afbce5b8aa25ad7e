//! Private containerd fixture (stub: being written by a helper).
