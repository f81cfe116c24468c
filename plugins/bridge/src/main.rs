fn main() {
    cni::run(&tether_bridge::Bridge)
}
