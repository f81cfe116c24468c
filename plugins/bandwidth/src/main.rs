fn main() {
    cni::run(&tether_bandwidth::BandwidthPlugin)
}
