fn main() {
    cni::run(&tether_tuning::TuningPlugin)
}
