fn main() {
    cni::run(&tether_overlay::Overlay)
}
