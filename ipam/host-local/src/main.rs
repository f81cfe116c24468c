fn main() {
    cni::run(&host_local::HostLocal)
}
