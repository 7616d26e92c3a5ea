from esrforge.cli import main

raise SystemExit(main())
