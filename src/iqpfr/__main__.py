from iqpfr.cli import main

raise SystemExit(main())
